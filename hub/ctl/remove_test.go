package ctl

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
)

func secret(name, cluster string, typ corev1.SecretType) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: identity.DefaultNamespace, Name: name, Labels: map[string]string{identity.LabelCluster: cluster}},
		Type:       typ,
	}
}

func secretNames(t *testing.T, c client.Reader) []string {
	t.Helper()
	var names []string
	for _, s := range tokenSecrets(t, c) {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return names
}

func TestRemove(t *testing.T) {
	const bt = identity.BootstrapSecretType
	seed := func() []client.Object {
		return []client.Object{
			newCluster("edge-1", time.Hour), newCluster("edge-2", time.Hour),
			secret("backhaul-bootstrap-aaaaaa", "edge-1", bt),
			secret("backhaul-bootstrap-bbbbbb", "edge-1", bt),
			secret("backhaul-bootstrap-cccccc", "edge-2", bt),
			// Labelled for edge-1 but not a bootstrap token: not ours.
			secret("edge-1-notes", "edge-1", corev1.SecretTypeOpaque),
		}
	}
	tests := []struct {
		name         string
		args         []string
		wantCode     int
		wantOut      string
		wantErr      string
		wantClusters []string
		wantSecrets  []string
	}{
		{
			name: "cluster and its tokens", args: []string{"remove", "edge-1"},
			wantOut:      "cluster.backhaul.io/edge-1 removed\n",
			wantClusters: []string{"edge-2"},
			wantSecrets:  []string{"backhaul-bootstrap-cccccc", "edge-1-notes"},
		},
		{
			name: "alias with wait", args: []string{"rm", "edge-2", "--wait"},
			wantOut:      "cluster.backhaul.io/edge-2 removed\n",
			wantClusters: []string{"edge-1"},
			wantSecrets:  []string{"backhaul-bootstrap-aaaaaa", "backhaul-bootstrap-bbbbbb", "edge-1-notes"},
		},
		{
			name: "missing", args: []string{"remove", "nope"}, wantCode: 1,
			wantErr:      "Error from server (NotFound): clusters.backhaul.io \"nope\" not found\n",
			wantClusters: []string{"edge-1", "edge-2"},
			wantSecrets:  []string{"backhaul-bootstrap-aaaaaa", "backhaul-bootstrap-bbbbbb", "backhaul-bootstrap-cccccc", "edge-1-notes"},
		},
		{
			name: "missing but ignored", args: []string{"remove", "nope", "--ignore-not-found"},
			wantClusters: []string{"edge-1", "edge-2"},
			wantSecrets:  []string{"backhaul-bootstrap-aaaaaa", "backhaul-bootstrap-bbbbbb", "backhaul-bootstrap-cccccc", "edge-1-notes"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeClient(t, seed()...)
			res := run(t, c, append([]string{"cluster"}, tc.args...)...)
			assert.Equal(t, tc.wantCode, res.code)
			assert.Equal(t, tc.wantOut, res.out)
			assert.Equal(t, tc.wantErr, res.err)

			var clusters v1alpha1.ClusterList
			require.NoError(t, c.List(context.Background(), &clusters))
			var names []string
			for _, cl := range clusters.Items {
				names = append(names, cl.Name)
			}
			assert.Equal(t, tc.wantClusters, names)
			assert.Equal(t, tc.wantSecrets, secretNames(t, c))
		})
	}
}

// Tokens of a cluster that is already gone are still cleaned up.
func TestRemoveLeftoverTokens(t *testing.T) {
	c := newFakeClient(t, secret("backhaul-bootstrap-aaaaaa", "gone", identity.BootstrapSecretType))
	res := run(t, c, "cluster", "remove", "gone", "--ignore-not-found")
	assert.Equal(t, 0, res.code)
	assert.Contains(t, res.err, "removed 1 leftover bootstrap token(s)")
	assert.Empty(t, secretNames(t, c))
}

// --wait returns once a finalizer (the hub's, say) lets the Cluster go.
func TestRemoveWaitsForFinalizer(t *testing.T) {
	cl := newCluster("edge-1", time.Hour)
	cl.Finalizers = []string{"backhaul.io/sessions"}
	c := newFakeClient(t, cl)

	ctx, cancel := context.WithCancel(context.Background())
	released, done := make(chan error, 1), make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		// Play the hub: drop the finalizer once deletion has begun.
		for ctx.Err() == nil {
			var got v1alpha1.Cluster
			err := c.Get(ctx, client.ObjectKey{Name: "edge-1"}, &got)
			if err == nil && got.DeletionTimestamp != nil {
				got.Finalizers = nil
				released <- c.Update(ctx, &got)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	res := run(t, c, "cluster", "remove", "edge-1", "--wait", "--timeout", "30s")
	require.Equal(t, 0, res.code, res.err)
	assert.Equal(t, "cluster.backhaul.io/edge-1 removed\n", res.out)
	require.NoError(t, <-released) // sent before deletion could finish
	err := c.Get(context.Background(), client.ObjectKey{Name: "edge-1"}, &v1alpha1.Cluster{})
	assert.True(t, apierrors.IsNotFound(err))
}

func TestRemoveWaitTimesOut(t *testing.T) {
	cl := newCluster("edge-1", time.Hour)
	cl.Finalizers = []string{"backhaul.io/sessions"}
	c := newFakeClient(t, cl)
	res := run(t, c, "cluster", "remove", "edge-1", "--wait", "--timeout", "20ms")
	assert.Equal(t, 1, res.code)
	assert.Contains(t, res.err, `error: waiting for cluster "edge-1" to be removed`)
	assert.Empty(t, res.out)
}
