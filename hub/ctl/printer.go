package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// Output formats of -o.
const (
	outputTable = ""
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
	outputName  = "name"
)

var outputFormats = []string{outputJSON, outputName, outputWide, outputYAML}

func validateOutput(format string) error {
	if format == outputTable || slices.Contains(outputFormats, format) {
		return nil
	}
	return usageErrorf("unable to match a printer suitable for the output format %q, allowed formats are: %s",
		format, strings.Join(outputFormats, ","))
}

// resourceName is how kubectl names the type in "-o name" and messages.
const resourceName = "cluster." + v1alpha1.GroupName

// clusterPrinter writes clusters in one -o format.
type clusterPrinter struct {
	format string
	now    time.Time
}

// print writes items; single prints one object rather than a List for
// json and yaml, as kubectl does for `get NAME`.
func (p clusterPrinter) print(w io.Writer, items []v1alpha1.Cluster, single bool) error {
	switch p.format {
	case outputJSON, outputYAML:
		var obj any
		if single && len(items) == 1 {
			obj = forOutput(items[0])
		} else {
			list := &v1alpha1.ClusterList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, Items: make([]v1alpha1.Cluster, 0, len(items))}
			for _, c := range items {
				list.Items = append(list.Items, *forOutput(c))
			}
			obj = list
		}
		return writeObject(w, p.format, obj)
	case outputName:
		for _, c := range items {
			if _, err := fmt.Fprintf(w, "%s/%s\n", resourceName, c.Name); err != nil {
				return err
			}
		}
		return nil
	default:
		return p.table(w, items)
	}
}

func writeObject(w io.Writer, format string, obj any) error {
	var (
		b   []byte
		err error
	)
	if format == outputYAML {
		b, err = yaml.Marshal(obj)
	} else {
		b, err = json.MarshalIndent(obj, "", "    ")
		b = append(b, '\n')
	}
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// forOutput sets the type (typed clients drop it) and drops managed
// fields, which kubectl hides by default.
func forOutput(c v1alpha1.Cluster) *v1alpha1.Cluster {
	out := c.DeepCopy()
	out.APIVersion = v1alpha1.SchemeGroupVersion.String()
	out.Kind = "Cluster"
	out.ManagedFields = nil
	return out
}

func (p clusterPrinter) table(w io.Writer, items []v1alpha1.Cluster) error {
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	header := []string{"NAME", "CONNECTED", "READY", "AGENT", "KUBERNETES", "HEARTBEAT", "AGE"}
	if p.format == outputWide {
		header = append(header, "AGENTS", "RTT", "P99", "RECONNECTS", "STREAMS", "LAST-DISCONNECT", "HUB-REPLICAS", "LABELS")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, c := range items {
		fmt.Fprintln(tw, strings.Join(p.row(&c), "\t"))
	}
	return tw.Flush()
}

func (p clusterPrinter) row(c *v1alpha1.Cluster) []string {
	heartbeat := "<never>"
	if t := c.Status.LastHeartbeatTime; t != nil {
		heartbeat = p.age(t.Time)
	}
	row := []string{
		c.Name,
		conditionStatus(c, v1alpha1.ClusterTunnelConnected),
		conditionStatus(c, v1alpha1.ClusterReady),
		orNone(c.Status.AgentVersion),
		orNone(c.Status.KubernetesVersion),
		heartbeat,
		p.age(c.CreationTimestamp.Time),
	}
	if p.format == outputWide {
		row = append(row, strconv.Itoa(int(c.Status.Agents)))
		row = append(row, p.tunnel(c.Status.Tunnel)...)
		row = append(row,
			orNone(strings.Join(c.Status.HubReplicas, ",")),
			orNone(labels.FormatLabels(c.Labels)))
	}
	return row
}

// tunnel is the wide columns of the tunnel's health: round trip (moving
// average) and its p99, reconnects and streams, and the last disconnect's
// reason and age.
func (p clusterPrinter) tunnel(t *v1alpha1.TunnelStatus) []string {
	if t == nil {
		return []string{"<none>", "<none>", "0", "0", "<none>"}
	}
	last := "<none>"
	if t.LastDisconnectReason != "" {
		last = t.LastDisconnectReason
		if t.LastDisconnectTime != nil {
			last += " (" + p.age(t.LastDisconnectTime.Time) + ")"
		}
	}
	return []string{rtt(t.RTT), rtt(t.RTTP99), strconv.Itoa(int(t.Reconnects)), strconv.Itoa(int(t.Streams)), last}
}

// rtt prints a round trip in milliseconds, to a tenth (a hundredth
// below one), and in seconds from one; ASCII only, so columns line up
// for tools that count bytes.
func rtt(d *metav1.Duration) string {
	if d == nil {
		return "<none>"
	}
	ms := float64(d.Duration) / float64(time.Millisecond)
	switch {
	case d.Duration >= time.Second:
		return d.Duration.Round(10 * time.Millisecond).String()
	case d.Duration < time.Millisecond:
		return fmt.Sprintf("%.2fms", ms)
	default:
		return fmt.Sprintf("%.1fms", ms)
	}
}

// age prints like kubectl's AGE column.
func (p clusterPrinter) age(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(p.now.Sub(t))
}

func conditionStatus(c *v1alpha1.Cluster, condType string) string {
	for _, cond := range c.Status.Conditions {
		if cond.Type == condType && cond.Status != "" {
			return string(cond.Status)
		}
	}
	return string(metav1.ConditionUnknown)
}

func orNone(s string) string {
	if s == "" || s == "<none>" {
		return "<none>"
	}
	return s
}
