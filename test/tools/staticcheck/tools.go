//go:build tools

// Package staticcheck pins the staticcheck release `make lint` runs. It is its
// own module so honnef.co/go/tools never enters Backhaul's go.mod; the
// Makefile builds the command straight from the module cache and rebuilds it
// only when this go.mod or go.sum changes.
package staticcheck

import _ "honnef.co/go/tools/cmd/staticcheck"
