// Package hubtest holds what the unit tests of the hub's packages share: a
// test certificate authority, tunnel sessions over in-memory pipes, fake
// agents, and metric readers. Only tests import it.
package hubtest

import "time"

// WaitBound turns a hang into a failure; nothing is timed against it.
const WaitBound = 10 * time.Second
