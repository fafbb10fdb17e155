package monitoring

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// build renders a kustomization as kubectl apply -k would, and decodes
// each object strictly into its type: a misspelt field fails here, not
// in someone's cluster.
func build(t *testing.T, dir string) map[string]any {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	out := map[string]any{}
	for _, r := range res.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var into any
		switch r.GetKind() {
		case "PrometheusRule":
			into = &monitoringv1.PrometheusRule{}
		case "ServiceMonitor":
			into = &monitoringv1.ServiceMonitor{}
		case "PodMonitor":
			into = &monitoringv1.PodMonitor{}
		case "ConfigMap":
			into = &corev1.ConfigMap{}
		default:
			t.Errorf("%s: unexpected %s %s", dir, r.GetKind(), r.GetName())
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Errorf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
			continue
		}
		if r.GetNamespace() != "backhaul-system" {
			t.Errorf("%s: %s %s in namespace %q", dir, r.GetKind(), r.GetName(), r.GetNamespace())
		}
		if len(b) > 256<<10/2 {
			t.Errorf("%s: %s %s is %d bytes: kubectl apply's last-applied annotation (256 KiB) would not hold it", dir, r.GetKind(), r.GetName(), len(b))
		}
		out[r.GetKind()+"/"+r.GetName()] = into
	}
	return out
}

// docs decodes every YAML document of a file.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			break
		}
		if d != nil {
			out = append(out, d)
		}
	}
	return out
}

// asType re-decodes a generic document into a typed object.
func asType(t *testing.T, doc map[string]any, into any) {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, into); err != nil {
		t.Fatal(err)
	}
}

// TestKustomizeHub renders deploy/monitoring: the PrometheusRule with the
// hub's alerts, a ServiceMonitor that selects exactly the hub's metrics
// Service on its metrics port, and the dashboard ConfigMap for Grafana's
// sidecar holding the dashboard file unchanged.
func TestKustomizeHub(t *testing.T) {
	root, _ := load(t)
	objs := build(t, monitoringPath(root))

	if _, ok := objs["PrometheusRule/backhaul-hub"]; !ok {
		t.Error("no PrometheusRule backhaul-hub")
	}

	sm, ok := objs["ServiceMonitor/backhaul-hub"].(*monitoringv1.ServiceMonitor)
	if !ok {
		t.Fatal("no ServiceMonitor backhaul-hub")
	}
	sel := labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)
	var scraped []string
	for _, d := range docs(t, filepath.Join(root, "deploy", "hub", "service.yaml")) {
		var svc corev1.Service
		asType(t, d, &svc)
		if !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		for _, ep := range sm.Spec.Endpoints {
			if slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				scraped = append(scraped, svc.Name+":"+ep.Port)
			}
		}
	}
	if !slices.Equal(scraped, []string{"backhaul-hub-metrics:metrics"}) {
		t.Errorf("the ServiceMonitor scrapes %v, want only backhaul-hub-metrics:metrics", scraped)
	}

	cm, ok := objs["ConfigMap/backhaul-dashboards"].(*corev1.ConfigMap)
	if !ok {
		t.Fatal("no ConfigMap backhaul-dashboards")
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("ConfigMap labels %v: want grafana_dashboard: \"1\" for Grafana's sidecar", cm.Labels)
	}
	want, err := os.ReadFile(monitoringPath(root, "dashboards", "backhaul-fleet.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["backhaul-fleet.json"] != string(want) {
		t.Error("the ConfigMap does not hold dashboards/backhaul-fleet.json as it is")
	}
}

// TestKustomizeAgent renders deploy/monitoring/agent: the agents'
// PrometheusRule and a PodMonitor that selects the pods of both agent
// overlays on their admin port.
func TestKustomizeAgent(t *testing.T) {
	root, _ := load(t)
	objs := build(t, monitoringPath(root, "agent"))
	if _, ok := objs["PrometheusRule/backhaul-agent"]; !ok {
		t.Error("no PrometheusRule backhaul-agent")
	}
	pm, ok := objs["PodMonitor/backhaul-agent"].(*monitoringv1.PodMonitor)
	if !ok {
		t.Fatal("no PodMonitor backhaul-agent")
	}
	sel := labels.SelectorFromSet(pm.Spec.Selector.MatchLabels)
	for _, overlay := range []string{"deployment/deployment.yaml", "daemonset/daemonset.yaml"} {
		var tmpl corev1.PodTemplateSpec
		for _, d := range docs(t, filepath.Join(root, "deploy", "agent", "overlays", overlay)) {
			spec, _ := d["spec"].(map[string]any)
			if tm, ok := spec["template"].(map[string]any); ok {
				asType(t, tm, &tmpl)
			}
		}
		if !sel.Matches(labels.Set(tmpl.Labels)) {
			t.Errorf("%s: the PodMonitor does not select its pods (labels %v)", overlay, tmpl.Labels)
			continue
		}
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			var port string
			if ep.Port != nil {
				port = *ep.Port
			}
			if !slices.ContainsFunc(tmpl.Spec.Containers, func(c corev1.Container) bool {
				return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == port })
			}) {
				t.Errorf("%s: no container port named %q", overlay, port)
			}
		}
	}
}
