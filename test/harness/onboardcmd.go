package harness

import (
	"fmt"
	"regexp"
	"strings"
)

// OnboardCommand is the deploy/onboard.sh command `backhaulctl cluster
// add` prints, parsed.
type OnboardCommand struct {
	Args  []string // after "onboard.sh", unquoted
	Token string   // the value of --token
}

// Flag is the value printed after name, or "".
func (c OnboardCommand) Flag(name string) string {
	for i, a := range c.Args {
		if i > 0 && c.Args[i-1] == name {
			return a
		}
	}
	return ""
}

var onboardLine = regexp.MustCompile(`(?m)^\s*(?:sh\s+)?\S*onboard\.sh\s+(.*)$`)

// ParseOnboardCommand finds the onboard.sh command in backhaulctl's output.
func ParseOnboardCommand(out string) (OnboardCommand, error) {
	m := onboardLine.FindStringSubmatch(out)
	if m == nil {
		return OnboardCommand{}, fmt.Errorf("no onboard.sh command in backhaulctl output:\n%s", out)
	}
	c := OnboardCommand{Args: strings.Fields(strings.TrimSuffix(strings.TrimSpace(m[1]), "\\"))}
	for i, a := range c.Args {
		c.Args[i] = strings.Trim(a, `'"`)
		if i > 0 && c.Args[i-1] == "--token" {
			c.Token = c.Args[i]
		}
	}
	if c.Token == "" {
		return OnboardCommand{}, fmt.Errorf("no --token in %q", m[0])
	}
	return c, nil
}
