// Package version holds the build's version, stamped by the Makefile with
// -ldflags "-X backhaul.io/backhaul/pkg/version.Version=...".
package version

// Version is the release or git describe of this build.
var Version = "dev"
