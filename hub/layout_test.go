package hub

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hubPackages are the hub's packages and the other hub packages each may
// import (docs/architecture.md draws them). The root wires them all.
var hubPackages = map[string][]string{
	"session":     nil,
	"auth":        {"session"},
	"frontend":    {"audit", "auth", "recording", "session"},
	"enrollment":  {"auth", "session"},
	"fleet":       nil,
	"peer":        {"session"},
	"propagation": nil,
	"ctl":         nil,
	"statuspage":  {"auth", "session"},
	"recording":   nil,
	"audit":       {"auth"},
}

// TestPackageLayering keeps the import rules each package's doc.go states.
func TestPackageLayering(t *testing.T) {
	const prefix = "backhaul.io/backhaul/hub/"
	for pkg, allowed := range hubPackages {
		t.Run(pkg, func(t *testing.T) {
			files, err := filepath.Glob(filepath.Join(pkg, "*.go"))
			require.NoError(t, err)
			require.NotEmpty(t, files)
			for _, f := range files {
				if strings.HasSuffix(f, "_test.go") {
					continue
				}
				parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
				require.NoError(t, err)
				for _, imp := range parsed.Imports {
					path, _ := strconv.Unquote(imp.Path.Value)
					other, ok := strings.CutPrefix(path, prefix)
					if !ok {
						continue
					}
					other, _, _ = strings.Cut(other, "/")
					assert.True(t, slices.Contains(allowed, other), "%s imports hub/%s; it may import only %v", f, other, allowed)
				}
			}
			_, err = os.Stat(filepath.Join(pkg, "doc.go"))
			assert.NoError(t, err, "every hub package says what it owns in doc.go")
		})
	}
}
