package charts

import (
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestSidecarInApplicationChart renders testdata/shop, an application chart
// with charts/strait as its dependency, whose pod template adds Strait with
// the "strait.sidecarContainer" and "strait.sidecarVolumes" templates the
// README documents: as a native sidecar (an init container with
// restartPolicy Always) and as a plain second container.
func TestSidecarInApplicationChart(t *testing.T) {
	for _, native := range []bool{true, false} {
		name := "native"
		if !native {
			name = "container"
		}
		t.Run(name, func(t *testing.T) {
			shop, err := loader.Load(filepath.Join("testdata", "shop"))
			if err != nil {
				t.Fatal(err)
			}
			shop.AddDependency(loadChart(t))
			sidecar := readValues(t, filepath.Join(chartDir, "ci", "sidecar.yaml"))
			sidecar["sidecar"] = map[string]any{"native": native}
			vals := map[string]any{"strait": sidecar}
			out, err := renderValues(shop, vals, capabilities(t))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			ms, err := decodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			r := &rendered{values: sidecar, all: ms}
			var d *appsv1.Deployment
			for _, m := range ms {
				switch o := m.obj.(type) {
				case *appsv1.Deployment:
					d = o
				case *corev1.ConfigMap:
					r.configMap = o
				default:
					t.Errorf("%s: unexpected %s in sidecar mode", m.source, m.kind)
				}
			}
			if d == nil {
				t.Fatal("the application's Deployment was not rendered")
			}
			parseConfigMap(t, r)
			ps := d.Spec.Template.Spec
			var c *corev1.Container
			if native {
				if len(ps.InitContainers) != 1 || len(ps.Containers) != 1 {
					t.Fatalf("init containers %d, containers %d: want Strait as the one init container", len(ps.InitContainers), len(ps.Containers))
				}
				c = straitContainer(t, ps.InitContainers)
				if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Errorf("native sidecar restartPolicy = %v, want Always", c.RestartPolicy)
				}
			} else {
				if len(ps.InitContainers) != 0 || len(ps.Containers) != 2 {
					t.Fatalf("init containers %d, containers %d: want the app and Strait", len(ps.InitContainers), len(ps.Containers))
				}
				c = straitContainer(t, ps.Containers)
				if c.RestartPolicy != nil {
					t.Errorf("plain container has restartPolicy %v (only init containers may)", *c.RestartPolicy)
				}
			}
			if r.configMap.Name != release+"-strait" {
				t.Errorf("ConfigMap %s, want %s-strait", r.configMap.Name, release)
			}
			mounts := checkPodBasics(t, r, ps, c)
			// Names the application might use itself are avoided.
			for _, v := range ps.Volumes {
				if !strings.HasPrefix(v.Name, "strait-") {
					t.Errorf("volume %q is not prefixed strait-", v.Name)
				}
			}
			for _, p := range c.Ports {
				if !strings.HasPrefix(p.Name, "strait-") {
					t.Errorf("sidecar port name %q is not prefixed strait-", p.Name)
				}
			}
			// The application is told Strait's own listener.
			app := straitlessContainer(ps.Containers)
			if app == nil || envValue(app, "KAFKA_BOOTSTRAP_SERVERS") == nil || envValue(app, "KAFKA_BOOTSTRAP_SERVERS").Value != r.cfg.Listen.Bootstrap {
				t.Errorf("application bootstrap env %+v, want Strait's %s", app, r.cfg.Listen.Bootstrap)
			}
			if d.Spec.Template.Annotations["checksum/strait"] == "" {
				t.Error("the strait.config checksum is empty in the application's pod")
			}
			validateConfig(t, r, mounts)
		})
	}
}

func straitlessContainer(cs []corev1.Container) *corev1.Container {
	for i := range cs {
		if cs[i].Name != "strait" {
			return &cs[i]
		}
	}
	return nil
}

// TestSidecarTemplateNeedsSidecarMode: including the container with the
// gateway's values is a mistake the template reports.
func TestSidecarTemplateNeedsSidecarMode(t *testing.T) {
	shop, err := loader.Load(filepath.Join("testdata", "shop"))
	if err != nil {
		t.Fatal(err)
	}
	shop.AddDependency(loadChart(t))
	vals := map[string]any{"strait": map[string]any{"mode": "gateway"}}
	vals["strait"] = chartutil.CoalesceTables(vals["strait"].(map[string]any), readValues(t, filepath.Join(chartDir, "ci", "sidecar.yaml")))
	_, err = renderValues(shop, vals, capabilities(t))
	if err == nil || !strings.Contains(err.Error(), "set mode: sidecar") {
		t.Fatalf("err = %v, want the sidecar template to refuse gateway values", err)
	}
}

// TestReadmeSnippetMatchesFixture: the README shows the lines the tested
// application chart uses.
func TestReadmeSnippetMatchesFixture(t *testing.T) {
	readme := readFile(t, filepath.Join(chartDir, "README.md"))
	for _, line := range []string{
		`{{- include "strait.sidecarContainer" (dict "Values" .Values.strait "Release" .Release) | nindent 8 }}`,
		`{{- include "strait.sidecarVolumes" (dict "Values" .Values.strait "Release" .Release) | nindent 8 }}`,
		`terminationGracePeriodSeconds: {{ include "strait.terminationGracePeriodSeconds" (dict "Values" .Values.strait "Release" .Release) }}`,
	} {
		if !strings.Contains(readFile(t, filepath.Join("testdata", "shop", "templates", "deployment.yaml")), line) {
			t.Fatalf("fixture lacks %s", line)
		}
		if !strings.Contains(readme, line) {
			t.Errorf("charts/strait/README.md lacks the snippet line\n%s", line)
		}
	}
}
