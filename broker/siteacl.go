package broker

import (
	"errors"
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// The actions and accesses of an ACLRule.
const (
	ACLAllow     = "allow"
	ACLDeny      = "deny"
	ACLPublish   = "publish"
	ACLSubscribe = "subscribe"
	ACLBoth      = "both"
)

// ACLRule is one rule of the site ACL for anonymous clients, like a line of
// Mosquitto's acl_file: Action (allow or deny) applies to Access (publish,
// subscribe or both) on the topics Topic covers. For subscribe, the rule is
// matched against the filter a client subscribes to and against the topic
// of every message delivered to it, so a deny on site/locked/# also keeps
// those messages from a client subscribed to site/#.
type ACLRule struct {
	Action string `yaml:"action"`
	Access string `yaml:"access"`
	Topic  string `yaml:"topic"`
}

func (r ACLRule) validate() error {
	var errs []error
	if r.Action != ACLAllow && r.Action != ACLDeny {
		errs = append(errs, fmt.Errorf("action %q: use allow or deny", r.Action))
	}
	if r.Access != ACLPublish && r.Access != ACLSubscribe && r.Access != ACLBoth {
		errs = append(errs, fmt.Errorf("access %q: use publish, subscribe or both", r.Access))
	}
	if !mqtt.IsValidFilter(r.Topic, false) {
		errs = append(errs, fmt.Errorf("topic %q is not a valid MQTT topic filter", r.Topic))
	} else if _, shared := unshare(r.Topic); shared {
		errs = append(errs, fmt.Errorf("topic %q: name the filter a shared subscription shares, without $share/{group}/", r.Topic))
	}
	return errors.Join(errs...)
}

// siteACL is the ordered rules for anonymous clients.
type siteACL []ACLRule

// allows reports whether an anonymous client may publish to topic (write)
// or subscribe to a filter or receive a message on a topic (read). Nothing
// under devices/, $SYS or $share is ever allowed; other topics starting
// with '$' are, as any other topic, up to the rules. The first rule whose
// access fits and whose topic covers the request decides; none allows.
func (acl siteACL) allows(topic string, write bool) bool {
	if !write {
		topic, _ = unshare(topic)
	}
	if !anonymousMayUse(topic) {
		return false
	}
	for _, r := range acl {
		if r.Access != ACLBoth && (r.Access == ACLPublish) != write {
			continue
		}
		if filterCovers(r.Topic, topic) {
			return r.Action == ACLAllow
		}
	}
	return true
}

// anonymousMayUse reports whether a topic or filter stays away from the
// devices/ tree, $SYS and $share. A filter starting with a wildcard passes;
// the messages it would receive from devices/ are refused one by one when
// they are delivered, and '$' topics never match it.
func anonymousMayUse(topic string) bool {
	if topic == "" || isSys(topic) {
		return false
	}
	first, _, _ := strings.Cut(topic, "/")
	return first != "devices" && !strings.EqualFold(first, "$share")
}

// isSys reports whether a topic is one mochi keeps for itself: it starts
// with $SYS, in any case (mochi drops a client's publish to any such topic,
// $SYSTEM/x included).
func isSys(topic string) bool {
	return len(topic) >= len(mqtt.SysPrefix) && strings.EqualFold(topic[:len(mqtt.SysPrefix)], mqtt.SysPrefix)
}
