package broker

import "strings"

// filterCovers reports whether every topic that requested matches is also
// matched by allowed. requested may be a topic name (then this is plain MQTT
// matching) or a filter (then this decides whether a subscription stays
// within what an ACL grants). As in MQTT, a filter starting with a wildcard
// does not match topics starting with '$', such as $SYS.
func filterCovers(allowed, requested string) bool {
	if allowed == "" || requested == "" {
		return false
	}
	if requested[0] == '$' && (allowed[0] == '+' || allowed[0] == '#') {
		return false
	}
	for {
		a, aRest, aMore := strings.Cut(allowed, "/")
		r, rRest, rMore := strings.Cut(requested, "/")
		switch {
		case a == "#":
			return true
		case r == "#":
			return false // only '#' covers '#'
		case a == "+":
			// one whole level, whatever it is, '+' included
		case r == "+" || a != r:
			return false
		}
		if !rMore {
			// "a/#" also matches "a" itself.
			return !aMore || aRest == "#"
		}
		if !aMore {
			return false
		}
		allowed, requested = aRest, rRest
	}
}

// anyCovers reports whether one of the filters covers requested.
func anyCovers(filters []string, requested string) bool {
	for _, f := range filters {
		if filterCovers(f, requested) {
			return true
		}
	}
	return false
}

// unshare returns the filter a shared subscription ($share/{group}/{filter})
// shares, and whether it was one. The prefix is matched without regard to
// case, as mochi does.
func unshare(filter string) (string, bool) {
	const prefix = "$share/"
	if len(filter) < len(prefix) || !strings.EqualFold(filter[:len(prefix)], prefix) {
		return filter, false
	}
	_, f, ok := strings.Cut(filter[len(prefix):], "/")
	if !ok {
		return "", true
	}
	return f, true
}
