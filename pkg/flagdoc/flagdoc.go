// Package flagdoc checks that a command's flags appear in its docs, so the
// operator docs cannot drift from the binaries without a failing test.
package flagdoc

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Undocumented lists the flags of fs that doc does not show the way the
// flag package's usage output does ("  -name" at the start of a line).
func Undocumented(fs *flag.FlagSet, doc string) []string {
	var missing []string
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(doc, "\n  -"+f.Name+" ") && !strings.Contains(doc, "\n  -"+f.Name+"\n") {
			missing = append(missing, f.Name)
		}
	})
	return missing
}

// Check reads the document at path and reports the flags of fs it lacks.
func Check(fs *flag.FlagSet, path string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if missing := Undocumented(fs, string(doc)); len(missing) > 0 {
		return fmt.Errorf("flags of %s missing from %s: %v", fs.Name(), path, missing)
	}
	return nil
}
