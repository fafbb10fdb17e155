package fleet

import (
	"testing"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/testutil"
)

func cluster(name string, uid types.UID, cidrs ...string) *v1alpha1.Cluster {
	return &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid}, Spec: v1alpha1.ClusterSpec{NodeCIDRs: cidrs}}
}

// The informer's handlers, driven by hand: what a Cluster event means for
// lookups and for revocation.
func TestClustersRevokeOnDeleteAndRecreate(t *testing.T) {
	c := &Clusters{log: testutil.Logger(t), uids: map[string]types.UID{}, cidrs: map[string][]string{}}
	var gone []string
	c.OnGone(func(name string) { gone = append(gone, name) })

	c.set(cluster("edge", "uid-1", "10.1.0.0/16"))
	c.set(cluster("core", "uid-7"))
	assert.True(t, c.Known("edge"))
	uid, ok := c.UID("edge")
	assert.True(t, ok)
	assert.Equal(t, types.UID("uid-1"), uid)
	assert.Equal(t, []string{"10.1.0.0/16"}, c.NodeCIDRs("edge"))
	assert.ElementsMatch(t, []string{"edge", "core"}, c.Names())

	c.set(cluster("edge", "uid-1", "10.2.0.0/16"))
	assert.Empty(t, gone, "an update of the same object revokes nothing")
	assert.Equal(t, []string{"10.2.0.0/16"}, c.NodeCIDRs("edge"))

	c.set(cluster("edge", "uid-2"))
	assert.Equal(t, []string{"edge"}, gone, "re-created under a new UID: old certificates and sessions go")
	uid, _ = c.UID("edge")
	assert.Equal(t, types.UID("uid-2"), uid)

	deleting := cluster("core", "uid-7")
	deleting.DeletionTimestamp = &metav1.Time{}
	c.set(deleting)
	assert.Equal(t, []string{"edge", "core"}, gone, "a terminating cluster is revoked at once")
	assert.False(t, c.Known("core"))

	c.delete(toolscache.DeletedFinalStateUnknown{Key: "edge", Obj: cluster("edge", "uid-2")})
	assert.Equal(t, []string{"edge", "core", "edge"}, gone)
	assert.False(t, c.Known("edge"))
	assert.Nil(t, c.NodeCIDRs("edge"))
	assert.Empty(t, c.Names())
}
