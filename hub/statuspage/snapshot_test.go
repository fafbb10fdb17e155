package statuspage

import (
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// Every field of Cluster, changed alone, makes a different row: a field
// sameCluster forgot would leave the page showing stale data.
func TestSameClusterSeesEveryField(t *testing.T) {
	base := Cluster{Name: "a", Replicas: []string{"hub-0"}}
	assert.True(t, sameCluster(&base, &base))
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			changed := base
			changed.Replicas = []string{"hub-0"}
			v := reflect.ValueOf(&changed).Elem().Field(i)
			switch v.Kind() {
			case reflect.String:
				v.SetString(v.String() + "x")
			case reflect.Bool:
				v.SetBool(!v.Bool())
			case reflect.Int, reflect.Int32, reflect.Int64:
				v.SetInt(v.Int() + 1)
			case reflect.Slice:
				v.Set(reflect.ValueOf([]string{"hub-1"}))
			case reflect.Struct:
				v.Set(reflect.ValueOf(time.Unix(1, 0)))
			default:
				t.Fatalf("field %s of kind %s: teach this test to change it", f.Name, v.Kind())
			}
			assert.False(t, sameCluster(&base, &changed), "a change of %s goes unnoticed", f.Name)
		})
	}
}
