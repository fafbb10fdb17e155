package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// root is the repository root as seen from this package's directory.
const root = "../../../.."

func TestConfigurationUpToDate(t *testing.T) {
	want, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, DefaultOutput)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v\nwrite it with: %s", err, Regenerate)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: the flag definitions changed since it was generated.\nregenerate it with: %s\n%s",
			DefaultOutput, Regenerate, lineDiff(got, want))
	}
}

// TestRenderIgnoresEnvironment fails when a default is computed from the
// machine (host name, home directory, environment), which would make the
// committed reference stale on every other machine. Such a default belongs
// in the flag's usage text; Commands blanks it.
func TestRenderIgnoresEnvironment(t *testing.T) {
	want, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"POD_NAME", "POD_NAMESPACE", "HOSTNAME", "HOME", "USER", "KUBECONFIG", "NODE_NAME"} {
		t.Setenv(k, "/flagdoc-perturbed-"+strings.ToLower(k))
	}
	got, err := Render()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the reference changes with the environment:\n%s", lineDiff(want, got))
	}
}

// lineDiff lists the lines of a that b lacks and the other way round.
func lineDiff(a, b []byte) string {
	var out []string
	in := func(x []byte) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(string(x), "\n") {
			m[l] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	for _, l := range strings.Split(string(a), "\n") {
		if !inb[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !ina[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMainsDefineNoFlags guards what Commands cannot call: a flag a main
// would define itself. Every flag comes from the options' Flags and
// command.VersionFlag, which Commands calls too; command.Main defines no
// other.
func TestMainsDefineNoFlags(t *testing.T) {
	for _, file := range []string{"hub/cmd/backhaul-hub/main.go", "agent/cmd/backhaul-agent/main.go"} {
		t.Run(file, func(t *testing.T) {
			assert.Empty(t, mainFlagDefs(t, filepath.Join(root, file)), "define flags in the options' Flags so the reference lists them")
		})
	}
	assert.Equal(t, map[string]string{"version": "print the version and exit"}, mainFlagDefs(t, filepath.Join(root, "pkg/command/command.go")),
		"command.Main defines only --version, through VersionFlag")
}

// flagDefiners are the flag.FlagSet methods that define a flag by name.
var flagDefiners = map[string]bool{
	"Bool": true, "BoolVar": true, "BoolFunc": true, "String": true, "StringVar": true,
	"Int": true, "IntVar": true, "Int64": true, "Int64Var": true, "Uint": true, "UintVar": true,
	"Uint64": true, "Uint64Var": true, "Float64": true, "Float64Var": true,
	"Duration": true, "DurationVar": true, "Func": true, "Var": true, "TextVar": true,
}

// mainFlagDefs returns name → usage of the flags defined in file with a
// literal name (usage empty when not a literal).
func mainFlagDefs(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defs := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || !flagDefiners[sel.Sel.Name] || len(call.Args) < 2 {
			return true
		}
		var lits []string
		for _, a := range call.Args {
			if bl, ok := a.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				s, err := strconv.Unquote(bl.Value)
				if err != nil {
					t.Fatal(err)
				}
				lits = append(lits, s)
			}
		}
		if len(lits) == 0 {
			return true
		}
		usage := ""
		if last, ok := call.Args[len(call.Args)-1].(*ast.BasicLit); ok && len(lits) > 1 && last.Kind == token.STRING {
			usage = lits[len(lits)-1]
		}
		defs[lits[0]] = usage
		return true
	})
	return defs
}

func TestEveryCommandHasFlags(t *testing.T) {
	for _, c := range Commands() {
		if len(c.Flags) == 0 {
			t.Errorf("%s lists no flags", c.Name)
		}
	}
}
