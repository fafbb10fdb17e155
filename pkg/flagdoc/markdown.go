// Package flagdoc renders a command's flags as markdown, so
// docs/configuration.md is generated from the flag definitions and a test
// fails when it drifts.
package flagdoc

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Command is one binary (or subcommand) whose flags a reference page lists.
type Command struct {
	// Name heads the section, e.g. "backhaul-hub" or "backhaulctl cluster add".
	Name string
	// Summary is a sentence or two printed under the heading.
	Summary string
	// Flags are the rows of the section's table, in the order given.
	Flags []Flag
}

// Flag is one row of a command's table. It is independent of the flag
// package so that commands built on other flag libraries (pflag, as cobra
// uses) can be listed too.
type Flag struct {
	Name      string // without dashes
	Shorthand string // one letter, or empty
	Type      string // e.g. "string", "duration", "bool"
	Default   string // empty when the default is the type's zero value
	Usage     string
}

// StdFlags registers a command's flags on a fresh standard-library FlagSet,
// exactly as the command's main does, and returns them as rows sorted by
// name, the order of the flag package's usage output.
func StdFlags(register func(fs *flag.FlagSet)) []Flag {
	fs := flag.NewFlagSet("flagdoc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	register(fs)
	var out []Flag
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if typ == "" {
			typ = "bool" // UnquoteUsage names no type for booleans
		}
		def := f.DefValue
		if isZero(f.Value, def) {
			def = ""
		}
		out = append(out, Flag{Name: f.Name, Type: typ, Default: def, Usage: usage})
	})
	return out
}

// Markdown writes title, intro and one section per command with a table of
// its flags: flag, type, default, description. The output depends only on
// its arguments, so a test can compare it with a committed file.
func Markdown(w io.Writer, title, intro string, cmds []Command) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", title)
	if intro = strings.TrimSpace(intro); intro != "" {
		fmt.Fprintf(&b, "%s\n\n", intro)
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "## %s\n\n", c.Name)
		if sum := strings.TrimSpace(c.Summary); sum != "" {
			fmt.Fprintf(&b, "%s\n\n", sum)
		}
		if len(c.Flags) == 0 {
			b.WriteString("No flags.\n\n")
			continue
		}
		b.WriteString("| flag | type | default | description |\n|---|---|---|---|\n")
		for _, f := range c.Flags {
			name := "`--" + f.Name + "`"
			if f.Shorthand != "" {
				name = "`-" + f.Shorthand + "`, " + name
			}
			def := ""
			if f.Default != "" {
				def = code(f.Default)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, cell(f.Type), def, cell(f.Usage))
		}
		b.WriteString("\n")
	}
	out := append(bytes.TrimRight(b.Bytes(), "\n"), '\n')
	_, err := w.Write(out)
	return err
}

// isZero reports whether def, a flag's default, is the zero value of the
// flag's type, which usage output leaves out; it builds the zero value the
// way the flag package's isZeroValue does.
func isZero(value interface{ String() string }, def string) (zero bool) {
	t := reflect.TypeOf(value)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	v, ok := z.Interface().(interface{ String() string })
	if !ok {
		return false
	}
	defer func() {
		if recover() != nil { // a Value whose String panics on its zero value
			zero = false
		}
	}()
	return def == v.String()
}

// code quotes s as inline code, keeping leading and trailing spaces visible.
func code(s string) string {
	if s == "" || strings.TrimSpace(s) != s {
		return "`" + fmt.Sprintf("%q", s) + "`"
	}
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// cell escapes what would end a table cell or read as HTML ("CLUSTER<suffix>").
func cell(s string) string {
	s = strings.NewReplacer("|", `\|`, "<", `\<`, ">", `\>`).Replace(s)
	return strings.Join(strings.Fields(s), " ")
}
