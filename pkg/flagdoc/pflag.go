package flagdoc

import (
	"github.com/spf13/pflag"
)

// PFlags returns the flags of a pflag FlagSet (as cobra commands have) as
// rows in the order VisitAll gives (sorted by name unless the set says
// otherwise). Hidden flags are left out, as in the command's help.
func PFlags(fs *pflag.FlagSet) []Flag {
	var out []Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		typ, usage := pflag.UnquoteUsage(f)
		if typ == "" {
			typ = "bool" // UnquoteUsage names no type for booleans
		}
		def := f.DefValue
		if def == "[]" || isZero(f.Value, def) {
			def = ""
		}
		out = append(out, Flag{Name: f.Name, Shorthand: f.Shorthand, Type: typ, Default: def, Usage: usage})
	})
	return out
}
