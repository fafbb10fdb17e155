package ctl

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

func fleet() []client.Object {
	return []client.Object{
		newCluster("edge-1", 50*time.Hour,
			withLabels(map[string]string{"region": "eu", "tier": "edge"}),
			withCondition(v1alpha1.ClusterTunnelConnected, metav1.ConditionTrue),
			withCondition(v1alpha1.ClusterReady, metav1.ConditionTrue),
			withStatus("v0.3.0", "v1.36.3", 5*time.Second, "hub-0", "hub-1"),
			withTunnel(func(t *v1alpha1.TunnelStatus) {
				t.RTT, t.RTTP99 = &metav1.Duration{Duration: 12345 * time.Microsecond}, &metav1.Duration{Duration: 830 * time.Microsecond}
				t.Reconnects, t.Streams = 1, 7
				t.LastDisconnectReason, t.LastDisconnectTime = "keepalive_timeout", &metav1.Time{Time: testNow.Add(-90 * time.Minute)}
			})),
		newCluster("idc-7", 3*time.Minute,
			withLabels(map[string]string{"region": "us"}),
			withCondition(v1alpha1.ClusterTunnelConnected, metav1.ConditionFalse),
			withCondition(v1alpha1.ClusterReady, metav1.ConditionFalse),
			withStatus("v0.2.9", "v1.35.1", 2*time.Hour),
			withTunnel(func(t *v1alpha1.TunnelStatus) { t.LastDisconnectReason = "agent_closed" })),
		newCluster("new-site", 20*time.Second),
	}
}

// table splits aligned output into trimmed cells, and checks the columns
// line up: every cell starts where its header does.
func table(t *testing.T, out string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	var rows [][]string
	for _, line := range lines {
		var row []string
		for j, s := range starts {
			end := len(line)
			if j+1 < len(starts) {
				end = starts[j+1]
			}
			require.LessOrEqual(t, s, len(line), "short line %q", line)
			cell := line[s:min(end, len(line))]
			require.NotEqual(t, byte(' '), cell[0], "misaligned column %d in %q", j, line)
			row = append(row, strings.TrimSpace(cell))
		}
		rows = append(rows, row)
	}
	return rows
}

func TestList(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want [][]string
	}{
		{
			name: "table",
			args: []string{"cluster", "list"},
			want: [][]string{
				{"NAME", "CONNECTED", "READY", "AGENT", "KUBERNETES", "HEARTBEAT", "AGE"},
				{"edge-1", "True", "True", "v0.3.0", "v1.36.3", "5s", "2d2h"},
				{"idc-7", "False", "False", "v0.2.9", "v1.35.1", "120m", "3m"},
				{"new-site", "Unknown", "Unknown", "<none>", "<none>", "<never>", "20s"},
			},
		},
		{
			name: "alias and selector",
			args: []string{"cluster", "ls", "-l", "region=eu"},
			want: [][]string{
				{"NAME", "CONNECTED", "READY", "AGENT", "KUBERNETES", "HEARTBEAT", "AGE"},
				{"edge-1", "True", "True", "v0.3.0", "v1.36.3", "5s", "2d2h"},
			},
		},
		{
			name: "wide",
			args: []string{"cluster", "list", "-o", "wide", "-l", "region"},
			want: [][]string{
				{"NAME", "CONNECTED", "READY", "AGENT", "KUBERNETES", "HEARTBEAT", "AGE", "AGENTS", "RTT", "P99", "RECONNECTS", "STREAMS", "LAST-DISCONNECT", "HUB-REPLICAS", "LABELS"},
				{"edge-1", "True", "True", "v0.3.0", "v1.36.3", "5s", "2d2h", "2", "12.3ms", "0.83ms", "1", "7", "keepalive_timeout (90m)", "hub-0,hub-1", "region=eu,tier=edge"},
				{"idc-7", "False", "False", "v0.2.9", "v1.35.1", "120m", "3m", "0", "<none>", "<none>", "0", "0", "agent_closed", "<none>", "region=us"},
			},
		},
		{
			name: "get one",
			args: []string{"cluster", "get", "idc-7"},
			want: [][]string{
				{"NAME", "CONNECTED", "READY", "AGENT", "KUBERNETES", "HEARTBEAT", "AGE"},
				{"idc-7", "False", "False", "v0.2.9", "v1.35.1", "120m", "3m"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, newFakeClient(t, fleet()...), tc.args...)
			require.Equal(t, 0, res.code, res.err)
			assert.Empty(t, res.err)
			assert.Equal(t, tc.want, table(t, res.out))
		})
	}
}

func TestListEmpty(t *testing.T) {
	res := run(t, newFakeClient(t, fleet()...), "cluster", "list", "-l", "region=mars")
	assert.Equal(t, 0, res.code)
	assert.Empty(t, res.out)
	assert.Equal(t, "No clusters found.\n", res.err)
}

func TestListStructured(t *testing.T) {
	decoders := map[string]func([]byte, any) error{
		"json": json.Unmarshal,
		"yaml": func(b []byte, v any) error { return yaml.Unmarshal(b, v) },
	}
	for format, decode := range decoders {
		t.Run(format, func(t *testing.T) {
			res := run(t, newFakeClient(t, fleet()...), "cluster", "list", "-o", format)
			require.Equal(t, 0, res.code, res.err)
			var list v1alpha1.ClusterList
			require.NoError(t, decode([]byte(res.out), &list))
			assert.Equal(t, "List", list.Kind)
			require.Len(t, list.Items, 3)
			first := list.Items[0]
			assert.Equal(t, "backhaul.io/v1alpha1", first.APIVersion)
			assert.Equal(t, "Cluster", first.Kind)
			assert.Equal(t, "edge-1", first.Name)
			assert.Equal(t, "v0.3.0", first.Status.AgentVersion)
			assert.Equal(t, []string{"hub-0", "hub-1"}, first.Status.HubReplicas)
			require.Len(t, first.Status.Conditions, 2)
			assert.Equal(t, metav1.ConditionTrue, first.Status.Conditions[0].Status)
		})
	}
}

func TestGet(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{
			name: "json is the object", args: []string{"edge-1", "-o", "json"},
			wantOut: `"kind": "Cluster"`,
		},
		{
			name: "name", args: []string{"edge-1", "idc-7", "-o", "name"},
			wantOut: "cluster.backhaul.io/edge-1\ncluster.backhaul.io/idc-7\n",
		},
		{
			name: "missing", args: []string{"nope"}, wantCode: 1,
			wantErr: "Error from server (NotFound): clusters.backhaul.io \"nope\" not found\n",
		},
		{
			name: "one missing of two", args: []string{"nope", "edge-1", "-o", "name"}, wantCode: 1,
			wantOut: "cluster.backhaul.io/edge-1\n",
			wantErr: "Error from server (NotFound): clusters.backhaul.io \"nope\" not found\n",
		},
		{
			name: "bad output format", args: []string{"edge-1", "-o", "xml"}, wantCode: 1,
			wantErr: "error: unable to match a printer suitable for the output format \"xml\", allowed formats are: json,name,wide,yaml\nSee 'backhaulctl cluster get --help' for usage.\n",
		},
		{
			name: "no name", args: nil, wantCode: 1,
			wantErr: "error: backhaulctl cluster get requires a cluster name\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, newFakeClient(t, fleet()...), append([]string{"cluster", "get"}, tc.args...)...)
			assert.Equal(t, tc.wantCode, res.code)
			if strings.Contains(tc.wantOut, "\n") {
				assert.Equal(t, tc.wantOut, res.out)
			} else {
				assert.Contains(t, res.out, tc.wantOut)
			}
			if tc.wantErr == "" {
				assert.Empty(t, res.err)
			} else {
				assert.True(t, strings.HasPrefix(res.err, tc.wantErr), "stderr: %q", res.err)
			}
		})
	}
}

func TestGetJSONRoundTrips(t *testing.T) {
	res := run(t, newFakeClient(t, fleet()...), "cluster", "get", "edge-1", "-o", "json")
	require.Equal(t, 0, res.code, res.err)
	var c v1alpha1.Cluster
	require.NoError(t, json.Unmarshal([]byte(res.out), &c))
	assert.Equal(t, "edge-1", c.Name)
	assert.Equal(t, "v1.36.3", c.Status.KubernetesVersion)
	assert.Nil(t, c.ManagedFields)
}
