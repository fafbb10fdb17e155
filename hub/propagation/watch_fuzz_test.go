package propagation

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// FuzzPropagationKey: the annotation naming a copy's Propagation comes
// from members, which may write anything there. A key is accepted only as
// "<namespace>/<name>" with both non-empty, and then round-trips.
func FuzzPropagationKey(f *testing.F) {
	for _, s := range []string{"apps/cfg", "", "/", "a/", "/b", "a/b/c", "a//b", "ns/name with spaces", "\x00/\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		o := &metav1.ObjectMeta{Annotations: map[string]string{AnnotationPropagation: v}}
		key, ok := propagationKey(o)
		if !ok {
			if i := strings.IndexByte(v, '/'); i > 0 && i < len(v)-1 {
				t.Fatalf("%q refused", v)
			}
			return
		}
		if key.Namespace == "" || key.Name == "" || strings.Contains(key.Namespace, "/") {
			t.Fatalf("%q gave %+v", v, key)
		}
		if key.String() != v {
			t.Fatalf("%q gave %q back", v, key.String())
		}
		if got, _ := indexByPropagation(&metav1.PartialObjectMetadata{ObjectMeta: *o}); len(got) != 1 || got[0] != (types.NamespacedName{Namespace: key.Namespace, Name: key.Name}).String() {
			t.Fatalf("index %v", got)
		}
	})
}
