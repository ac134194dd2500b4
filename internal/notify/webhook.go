// Package notify delivers hub events to subscription webhooks: signed HTTP
// POSTs, at least once, from an outbox in the state database that survives
// restarts, retried with exponential backoff, to addresses an allow-list
// policy admits.
package notify

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Config configures webhook delivery and the address policy.
type Config struct {
	// AllowLoopback admits loopback addresses (127.0.0.0/8, ::1): off by
	// default, because they reach the hub's own host (its API, InfluxDB).
	AllowLoopback bool `yaml:"allow_loopback"`
	// AllowPrivate admits private ranges (10/8, 172.16/12, 192.168/16,
	// fc00::/7): on by default, because receivers on the local network are
	// the common case for a hub at the edge.
	AllowPrivate bool `yaml:"allow_private"`
	// AllowCIDRs are ranges always admitted, whatever else says.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// DenyCIDRs are ranges refused in addition to the built-in ones.
	DenyCIDRs []string `yaml:"deny_cidrs"`
	// RequireHTTPS refuses plain http URLs.
	RequireHTTPS bool `yaml:"require_https"`
	// Timeout bounds one delivery attempt.
	Timeout time.Duration `yaml:"timeout"`
	// RetryMin and RetryMax bound the exponential backoff between attempts.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// MaxAge drops a delivery not made within this long of its event.
	MaxAge time.Duration `yaml:"max_age"`
	// DisableAfter disables a webhook that has failed every attempt for
	// this long; its pending deliveries are dropped.
	DisableAfter time.Duration `yaml:"disable_after"`
	// MaxPending bounds one webhook's outbox; when full the oldest delivery
	// is dropped.
	MaxPending int `yaml:"max_pending"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{AllowPrivate: true, Timeout: 10 * time.Second, RetryMin: time.Second, RetryMax: 10 * time.Minute,
		MaxAge: 24 * time.Hour, DisableAfter: 24 * time.Hour, MaxPending: 10000}
}

// Validate checks the values.
func (c Config) Validate() error {
	var errs []error
	for i, s := range c.AllowCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("webhooks.allow_cidrs[%d]: %q is not a CIDR range such as 10.1.0.0/16", i, s))
		}
	}
	for i, s := range c.DenyCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("webhooks.deny_cidrs[%d]: %q is not a CIDR range such as 10.1.0.0/16", i, s))
		}
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("webhooks.timeout must be positive"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("webhooks.retry_min must be positive and not above webhooks.retry_max"))
	}
	if c.MaxAge <= 0 || c.DisableAfter <= 0 {
		errs = append(errs, errors.New("webhooks.max_age and webhooks.disable_after must be positive"))
	}
	if c.MaxPending < 1 {
		errs = append(errs, errors.New("webhooks.max_pending must be at least 1"))
	}
	return errors.Join(errs...)
}

// Event kinds a webhook may subscribe to: every live stream kind except
// readings, which come at a rate no webhook should receive (use the live
// stream for those).
var Kinds = []string{"alert", "command", "presence", "state"}

// Spec is a webhook as an admin registers it.
type Spec struct {
	URL string `json:"url"`
	// Events lists the event kinds delivered: alert, command, presence,
	// state, or "*" for all of them.
	Events      []string `json:"events"`
	Description string   `json:"description,omitempty"`
	// Secret signs the deliveries; generated when empty. At least 16
	// characters.
	Secret string `json:"secret,omitempty"`
}

// ValidationError says what is wrong with a webhook as submitted.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

func (s *Spec) normalize() error {
	if len(s.Events) == 0 {
		return &ValidationError{"events: list at least one of " + strings.Join(Kinds, ", ") + ` or "*"`}
	}
	var evs []string
	for i, e := range s.Events {
		switch {
		case e == "*":
			evs = append(evs, Kinds...)
		case e == "reading":
			return &ValidationError{fmt.Sprintf("events[%d]: readings are not delivered by webhook; use the live stream", i)}
		case !slices.Contains(Kinds, e):
			return &ValidationError{fmt.Sprintf("events[%d]: %q: use %s or \"*\"", i, e, strings.Join(Kinds, ", "))}
		default:
			evs = append(evs, e)
		}
	}
	slices.Sort(evs)
	s.Events = slices.Compact(evs)
	if len(s.Description) > 1000 {
		return &ValidationError{"description: at most 1000 characters"}
	}
	if s.Secret != "" && (len(s.Secret) < 16 || len(s.Secret) > 256) {
		return &ValidationError{"secret: 16 to 256 characters, or empty to have one generated"}
	}
	return nil
}

// Webhook is a registered webhook as the API shows it; the secret is never
// shown after creation.
type Webhook struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Events      []string  `json:"events"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by,omitempty"`
	// Disabled is set when the webhook kept failing (or its receiver
	// answered 410 Gone); DisabledReason says why. Nothing is delivered to
	// a disabled webhook until it is enabled again.
	Disabled       bool       `json:"disabled"`
	DisabledReason string     `json:"disabled_reason,omitempty"`
	DisabledAt     *time.Time `json:"disabled_at,omitempty"`
	Status         Status     `json:"status"`
}

// Status records a webhook's deliveries.
type Status struct {
	// Pending counts deliveries in the outbox.
	Pending   int    `json:"pending"`
	Delivered uint64 `json:"delivered"`
	// FailedAttempts counts attempts that did not get a 2xx answer.
	FailedAttempts uint64 `json:"failed_attempts"`
	// Dropped counts deliveries given up: too old, outbox full, or dropped
	// when the webhook was disabled.
	Dropped       uint64     `json:"dropped"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	// LastStatus is the HTTP status of the last attempt, 0 when it got no
	// answer.
	LastStatus    int        `json:"last_status,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	LastSuccessAt *time.Time `json:"last_success_at,omitempty"`
	// FailingSince is the first failed attempt since the last success.
	FailingSince *time.Time `json:"failing_since,omitempty"`
}

// stored is the persisted form of a webhook, secret included.
type stored struct {
	Webhook
	Secret string `json:"secret"`
}

func (w *Webhook) clone() Webhook {
	c := *w
	c.Events = slices.Clone(w.Events)
	return c
}
