// Package charts tests the Helm chart in charts/strait with Helm's own Go
// SDK: lint, schema validation and rendering for every values file in
// charts/strait/ci/, every rendered manifest decoded strictly into the
// k8s.io/api types, and the rendered strait.yaml checked by Strait's real
// configuration validation (config.Parse/Validate, and `strait validate`
// with $STRAIT_BIN, as under `make test`, or ./cmd/strait built here).
package charts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/strait-proxy/strait/config"
	"github.com/strait-proxy/strait/internal/straitbin"
)

const (
	chartDir  = "strait"
	release   = "edge"
	namespace = "kafka"
	// The oldest Kubernetes the chart supports (Chart.yaml kubeVersion):
	// preStop sleep and native sidecars are on by default from 1.30.
	kubeVersion = "v1.30.0"
)

// decoder is strict: an unknown or duplicated field is an error, so a typo
// in a template (containerPrt, readOnlyRootFileSystem) fails the test.
var decoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

func capabilities(t *testing.T) *chartutil.Capabilities {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	return caps
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

func ciFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gateway-ports.yaml", "gateway-sni.yaml", "sidecar.yaml"} {
		if !slices.Contains(files, filepath.Join(chartDir, "ci", want)) {
			t.Errorf("ci/%s is missing", want)
		}
	}
	return files
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValuesFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return v.AsMap()
}

// renderValues coalesces vals over the chart's defaults, validates them
// against values.schema.json (as helm install does) and renders.
func renderValues(ch *chart.Chart, vals map[string]any, caps *chartutil.Capabilities) (map[string]string, error) {
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: release, Namespace: namespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

// manifest is one decoded Kubernetes object with the template it came from.
type manifest struct {
	source string
	obj    runtime.Object
	raw    map[string]any // set for kinds the client-go scheme does not know (CRDs)
	kind   string
}

// decodeAll splits rendered templates into YAML documents and decodes each
// strictly. Kinds outside the client-go scheme are CRDs: only the
// ServiceMonitor is expected, and it is returned raw for a structural check.
func decodeAll(rendered map[string]string) ([]manifest, error) {
	var out []manifest
	names := make([]string, 0, len(rendered))
	for n := range rendered {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, helpers
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(rendered[name])))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			var probe map[string]any
			if err := yaml.Unmarshal(doc, &probe); err != nil {
				return nil, fmt.Errorf("%s: not YAML: %w\n%s", name, err, doc)
			}
			if len(probe) == 0 {
				continue // only comments
			}
			obj, gvk, err := decoder.Decode(doc, nil, nil)
			if runtime.IsNotRegisteredError(err) && probe["kind"] == "ServiceMonitor" {
				// A Prometheus Operator CRD, not in k8s.io/api: checked
				// structurally by checkServiceMonitor.
				out = append(out, manifest{source: name, raw: probe, kind: "ServiceMonitor"})
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("%s: strict decoding: %w\n%s", name, err, doc)
			}
			out = append(out, manifest{source: name, obj: obj, kind: gvk.Kind})
		}
	}
	return out, nil
}

func TestLintCIValues(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range ciFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			l := lint.AllWithKubeVersion(chartDir, readValues(t, f), namespace, kv)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				} else {
					t.Logf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestDefaultValuesNeedAnUpstream: the defaults alone are refused at
// install, naming the missing key, rather than deploying a proxy to nowhere.
func TestDefaultValuesNeedAnUpstream(t *testing.T) {
	_, err := renderValues(loadChart(t), nil, capabilities(t))
	if err == nil || !strings.Contains(err.Error(), "bootstrap") {
		t.Fatalf("rendering with the defaults: err = %v, want a schema error about config.upstream.bootstrap", err)
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	base := readValues(t, filepath.Join(chartDir, "ci", "gateway-ports.yaml"))
	sni := readValues(t, filepath.Join(chartDir, "ci", "gateway-sni.yaml"))
	cases := []struct {
		name string
		from map[string]any
		set  string // YAML merged over from
		want string // in the error
	}{
		{"replicas as a word", base, `replicaCount: "three"`, "replicaCount"},
		{"unknown mode", base, `mode: daemonset`, "mode"},
		{"unknown top-level key", base, `replicas: 3`, "replicas"},
		{"chart-owned config key", base, `config: {listen: {bootstrap: "0.0.0.0:1"}}`, "listen"},
		{"chart-owned upstream TLS", base, `config: {upstream: {tls: {enabled: true}}}`, "tls"},
		{"chart-owned admin", base, `config: {admin: {listen: "0.0.0.0:1"}}`, "admin"},
		{"chart-owned drain timeout", base, `config: {limits: {drain_timeout: 10s}}`, "drain_timeout"},
		{"bootstrap without a port", base, `config: {upstream: {bootstrap: [kafka-0]}}`, "bootstrap"},
		{"bad duration", base, `config: {upstream: {dial_timeout: soon}}`, "dial_timeout"},
		{"bad log level", base, `config: {log: {level: verbose}}`, "level"},
		{"drain as a string", base, `drain: {timeoutSeconds: "30s"}`, "timeoutSeconds"},
		{"port out of range", base, `admin: {port: 70000}`, "port"},
		{"sni without a certificate", sni, `tls: {listener: {secretName: "", clientAuth: false}}`, "secretName"},
		{"sni template without {node}", sni, `listener: {sni: {hostTemplate: broker.strait.example.com}}`, "hostTemplate"},
		{"endpoint without upstream TLS", base, `tls: {upstream: {enabled: false}}
config: {upstream: {endpoint: "vpce:9096"}}`, "enabled"},
		{"load balancer without an advertised host", base, `listener: {advertiseHost: ""}`, "advertiseHost"},
		{"extra mount shadowing the config volume", base, `extraSecretMounts: [{name: config, secretName: x, mountPath: /etc/x}]`, "name"},
		{"extra mount over the config", base, `extraSecretMounts: [{name: x, secretName: x, mountPath: /etc/strait/config}]`, "mountPath"},
		{"gateway ports without broker ids", base, `listener: {brokerIds: []}`, "brokerIds"},
	}
	ch, caps := loadChart(t), capabilities(t)
	// The unmodified files pass, so each failure below is the change's.
	for _, v := range []map[string]any{base, sni} {
		if _, err := renderValues(ch, v, caps); err != nil {
			t.Fatalf("baseline values fail: %v", err)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var over map[string]any
			if err := yaml.Unmarshal([]byte(c.set), &over); err != nil {
				t.Fatal(err)
			}
			vals := chartutil.CoalesceTables(over, deepCopy(t, c.from))
			_, err := renderValues(ch, vals, caps)
			if err == nil {
				t.Fatalf("%s was accepted", c.set)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s: error does not name %q:\n%v", c.set, c.want, err)
			}
		})
	}
}

func deepCopy(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConfigTypoCaughtByStrait: keys under config that the schema does not
// list pass through (so the chart keeps up with new Strait settings), and
// Strait's strict decoding of the rendered strait.yaml refuses a misspelt
// one, naming its path: the render tests would fail on it.
func TestConfigTypoCaughtByStrait(t *testing.T) {
	vals := readValues(t, filepath.Join(chartDir, "ci", "gateway-ports.yaml"))
	vals["config"].(map[string]any)["limits"].(map[string]any)["max_in_fligth"] = 3
	out, err := renderValues(loadChart(t), vals, capabilities(t))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	ms, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if cm, ok := m.obj.(*corev1.ConfigMap); ok {
			_, err := config.Parse([]byte(cm.Data["strait.yaml"]))
			if err == nil || !strings.Contains(err.Error(), "limits.max_in_fligth") {
				t.Fatalf("config.Parse: err = %v, want an unknown key limits.max_in_fligth", err)
			}
			return
		}
	}
	t.Fatal("no ConfigMap")
}

// TestGracePeriodMustCoverDrain: a grace period the kubelet would end
// before the drain does is refused.
func TestGracePeriodMustCoverDrain(t *testing.T) {
	vals := readValues(t, filepath.Join(chartDir, "ci", "gateway-ports.yaml"))
	vals["terminationGracePeriodSeconds"] = 50 // preStop 15 + drain 45 = 60
	_, err := renderValues(loadChart(t), vals, capabilities(t))
	if err == nil || !strings.Contains(err.Error(), "terminationGracePeriodSeconds (50) must exceed") {
		t.Fatalf("err = %v, want the grace period refused", err)
	}
}

// TestStrictDecodeCatchesTypos shows the decoder used on every manifest
// fails on a misspelt field: without it the render tests would prove little.
func TestStrictDecodeCatchesTypos(t *testing.T) {
	good := "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 1, targetPort: 1}]\n"
	bad := strings.Replace(good, "targetPort", "targetPrt", 1)
	if _, err := decodeAll(map[string]string{"t/good.yaml": good}); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	if _, err := decodeAll(map[string]string{"t/bad.yaml": bad}); err == nil || !strings.Contains(err.Error(), "targetPrt") {
		t.Fatalf("misspelt field: err = %v, want a strict decoding error naming targetPrt", err)
	}
	unknown := "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n"
	if _, err := decodeAll(map[string]string{"t/crd.yaml": unknown}); err == nil {
		t.Fatal("an unknown kind other than ServiceMonitor was accepted")
	}
}

// rendered is one ci file's manifests by kind.
type rendered struct {
	values      map[string]any
	gateway     bool // the chart's own Deployment, not an application's pod
	all         []manifest
	deployment  *appsv1.Deployment
	services    map[string]*corev1.Service
	configMap   *corev1.ConfigMap
	hpa         *autoscalingv2.HorizontalPodAutoscaler
	pdb         *policyv1.PodDisruptionBudget
	sa          *corev1.ServiceAccount
	monitor     map[string]any
	straitYAML  []byte
	cfg         config.Config
	notes       string
	rawRendered map[string]string
}

func renderCI(t *testing.T, file string) *rendered {
	t.Helper()
	vals := readValues(t, file)
	out, err := renderValues(loadChart(t), vals, capabilities(t))
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	ms, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{values: vals, all: ms, services: map[string]*corev1.Service{}, rawRendered: out, notes: out["strait/templates/NOTES.txt"]}
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			r.deployment = o
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.ConfigMap:
			r.configMap = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpa = o
		case *policyv1.PodDisruptionBudget:
			r.pdb = o
		case *corev1.ServiceAccount:
			r.sa = o
		case nil:
			r.monitor = m.raw
		default:
			t.Errorf("%s: unexpected kind %s", m.source, m.kind)
		}
		if m.obj != nil {
			if ns := m.obj.(interface{ GetNamespace() string }).GetNamespace(); ns != namespace {
				t.Errorf("%s %s: namespace %q, want %q", m.kind, m.source, ns, namespace)
			}
		}
	}
	r.gateway = r.deployment != nil
	parseConfigMap(t, r)
	return r
}

func parseConfigMap(t *testing.T, r *rendered) {
	t.Helper()
	var err error
	if r.configMap == nil {
		t.Fatal("no ConfigMap rendered")
	}
	r.straitYAML = []byte(r.configMap.Data["strait.yaml"])
	if len(r.straitYAML) == 0 {
		t.Fatalf("ConfigMap %s has no strait.yaml: keys %v", r.configMap.Name, reflect.ValueOf(r.configMap.Data).MapKeys())
	}
	r.cfg, err = config.Parse(r.straitYAML)
	if err != nil {
		t.Fatalf("config.Parse of the rendered strait.yaml: %v\n%s", err, r.straitYAML)
	}
}

func TestRenderGatewayPorts(t *testing.T) {
	r := renderCI(t, filepath.Join(chartDir, "ci", "gateway-ports.yaml"))
	checkGateway(t, r)
	cfg := r.cfg
	if cfg.Listen.Bootstrap != "0.0.0.0:9092" || cfg.Listen.BrokerPortBase != 19092 || cfg.Listen.AdvertiseHost != "kafka.strait.example.com" {
		t.Errorf("listen = %+v", cfg.Listen)
	}
	if got := cfg.Listen.BrokerPort(7); got != 30007 {
		t.Errorf("node 7 port = %d, want the override 30007", got)
	}
	if cfg.SNI.Listen != "" {
		t.Errorf("sni.listen = %q in ports mode", cfg.SNI.Listen)
	}
	if !cfg.Upstream.TLS.Enabled || cfg.Upstream.TLS.CAFile != "/etc/strait/tls/upstream/ca.crt" || cfg.Upstream.TLS.CertFile != "" {
		t.Errorf("upstream.tls = %+v", cfg.Upstream.TLS)
	}
	if len(cfg.Interceptors) != 2 || cfg.Interceptors[1].Name != "encrypt" {
		t.Errorf("interceptors = %+v", cfg.Interceptors)
	}

	// Every broker port the config serves for the listed ids is a container
	// port and a Service port with the same number (clients dial the ports
	// Strait advertises).
	svc := r.services[release+"-strait"]
	if svc == nil {
		t.Fatalf("no Service %s-strait: %v", release, reflect.ValueOf(r.services).MapKeys())
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("service type %s, externalTrafficPolicy %s", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
	want := []int{portOf(t, cfg.Listen.Bootstrap)}
	for _, id := range []int32{0, 1, 2, 7} {
		want = append(want, cfg.Listen.BrokerPort(id))
	}
	c := straitContainer(t, r.deployment.Spec.Template.Spec.Containers)
	var gotSvc []int
	for _, p := range svc.Spec.Ports {
		gotSvc = append(gotSvc, int(p.Port))
		cp := containerPortNamed(c, p.TargetPort.StrVal)
		if cp == nil || int(cp.ContainerPort) != int(p.Port) {
			t.Errorf("Service port %s (%d) targets %q, which is container port %v", p.Name, p.Port, p.TargetPort.String(), cp)
		}
	}
	if !reflect.DeepEqual(gotSvc, want) {
		t.Errorf("Service ports %v, want bootstrap and brokers 0,1,2,7 from the config: %v", gotSvc, want)
	}

	// Autoscaling: no fixed replica count fights the HPA.
	if r.deployment.Spec.Replicas != nil {
		t.Errorf("replicas = %d with autoscaling on", *r.deployment.Spec.Replicas)
	}
	if r.hpa == nil || r.hpa.Spec.ScaleTargetRef.Name != r.deployment.Name || r.hpa.Spec.MinReplicas == nil || *r.hpa.Spec.MinReplicas != 3 || r.hpa.Spec.MaxReplicas != 12 || len(r.hpa.Spec.Metrics) != 2 {
		t.Errorf("hpa = %+v", r.hpa)
	}
	if r.pdb == nil || r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("pdb = %+v", r.pdb)
	}
	checkServiceMonitor(t, r)
	if grace := *r.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; grace != 15+45+10 {
		t.Errorf("default terminationGracePeriodSeconds = %d, want preStop 15 + drain 45 + 10", grace)
	}
	if v := envValue(c, "GOMEMLIMIT"); v == nil || v.ValueFrom == nil {
		t.Errorf("env GOMEMLIMIT from the values is missing: %+v", c.Env)
	}
}

func TestRenderGatewaySNI(t *testing.T) {
	r := renderCI(t, filepath.Join(chartDir, "ci", "gateway-sni.yaml"))
	checkGateway(t, r)
	cfg := r.cfg
	if cfg.SNI.Listen != "0.0.0.0:9443" || cfg.SNI.HostTemplate != "b{node}.strait.example.com" || cfg.SNI.AdvertisePort != 443 {
		t.Errorf("sni = %+v, want the container port 9443 and the Service's 443 advertised", cfg.SNI)
	}
	if cfg.Listen.Bootstrap != "" {
		t.Errorf("listen.bootstrap = %q in SNI mode", cfg.Listen.Bootstrap)
	}
	lt := cfg.Listen.TLS
	if lt.CertFile != "/etc/strait/tls/listener/tls.crt" || lt.KeyFile != "/etc/strait/tls/listener/tls.key" || lt.ClientCAFile != "/etc/strait/tls/listener/ca.crt" {
		t.Errorf("listen.tls = %+v", lt)
	}
	ut := cfg.Upstream.TLS
	if !ut.Enabled || ut.CertFile != "/etc/strait/tls/upstream/tls.crt" || ut.KeyFile != "/etc/strait/tls/upstream/tls.key" || cfg.Upstream.Endpoint == "" {
		t.Errorf("upstream = %+v", cfg.Upstream)
	}
	svc := r.services[release+"-strait"]
	c := straitContainer(t, r.deployment.Spec.Template.Spec.Containers)
	if svc == nil || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 {
		t.Fatalf("SNI Service = %+v, want one port 443", svc)
	}
	if cp := containerPortNamed(c, svc.Spec.Ports[0].TargetPort.StrVal); cp == nil || int(cp.ContainerPort) != portOf(t, cfg.SNI.Listen) {
		t.Errorf("SNI Service targets %v, want the sni.listen port", cp)
	}
	if r.deployment.Spec.Replicas == nil || *r.deployment.Spec.Replicas != 3 || r.hpa != nil {
		t.Errorf("replicas %v, hpa %v: want 3 fixed replicas and no HPA", r.deployment.Spec.Replicas, r.hpa)
	}
	if r.pdb == nil || r.pdb.Spec.MinAvailable == nil || r.pdb.Spec.MinAvailable.IntValue() != 2 || r.pdb.Spec.MaxUnavailable != nil {
		t.Errorf("pdb = %+v, want minAvailable 2 only", r.pdb)
	}
	if r.monitor != nil {
		t.Error("ServiceMonitor rendered while disabled")
	}
	aff := r.deployment.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("podAntiAffinity hard: affinity = %+v", aff)
	}
	if grace := *r.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; grace != 90 {
		t.Errorf("terminationGracePeriodSeconds = %d, want the value's 90", grace)
	}
	if !strings.Contains(r.notes, "bootstrap.strait.example.com:443") {
		t.Errorf("NOTES do not give the SNI bootstrap address (%s): %s", cfg.SNI.BootstrapHost(), r.notes)
	}
}

func TestRenderSidecar(t *testing.T) {
	r := renderCI(t, filepath.Join(chartDir, "ci", "sidecar.yaml"))
	// The chart alone renders only the configuration; the container goes
	// into the application's pod (TestSidecarInApplicationChart).
	if len(r.all) != 1 {
		var kinds []string
		for _, m := range r.all {
			kinds = append(kinds, m.kind)
		}
		t.Errorf("sidecar mode rendered %v, want only the ConfigMap", kinds)
	}
	cfg := r.cfg
	if cfg.Listen.Bootstrap != "127.0.0.1:9092" || cfg.Listen.AdvertiseHost != "" {
		t.Errorf("listen = %+v, want 127.0.0.1:9092 advertised as itself", cfg.Listen)
	}
	if cfg.Admin.Listen != "0.0.0.0:9644" {
		t.Errorf("admin.listen = %q: the kubelet probes the pod IP", cfg.Admin.Listen)
	}
	if cfg.Limits.DrainTimeout.D().Seconds() != 20 {
		t.Errorf("drain_timeout = %v", cfg.Limits.DrainTimeout.D())
	}
	validateConfig(t, r, nil)
}

// checkGateway asserts what every gateway rendering must have.
func checkGateway(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployment
	if d == nil {
		t.Fatal("no Deployment")
	}
	if r.sa == nil || d.Spec.Template.Spec.ServiceAccountName != r.sa.Name {
		t.Errorf("service account %v, pod uses %q", r.sa, d.Spec.Template.Spec.ServiceAccountName)
	}
	ps := d.Spec.Template.Spec
	c := straitContainer(t, ps.Containers)
	mounts := checkPodBasics(t, r, ps, c)

	// The selector picks the pods, the Services pick them too.
	for name, s := range r.services {
		for k, v := range s.Spec.Selector {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the pods do not carry", name, k, v)
			}
		}
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("Deployment selector %s=%s not on its pods", k, v)
		}
	}
	if d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Error("no checksum/config annotation: a config change would not roll the pods")
	}
	if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update %+v, want maxUnavailable 0", d.Spec.Strategy.RollingUpdate)
	}
	admin := r.services[release+"-strait-admin"]
	if admin == nil || len(admin.Spec.Ports) != 1 || int(admin.Spec.Ports[0].Port) != portOf(t, r.cfg.Admin.Listen) {
		t.Errorf("admin Service = %+v", admin)
	} else if cp := containerPortNamed(c, admin.Spec.Ports[0].TargetPort.StrVal); cp == nil || int(cp.ContainerPort) != portOf(t, r.cfg.Admin.Listen) {
		t.Errorf("admin Service targets %v", cp)
	}
	validateConfig(t, r, mounts)
}

// checkPodBasics checks probes, preStop, grace, security and mounts of the
// Strait container; it returns the read-only mounts by path.
func checkPodBasics(t *testing.T, r *rendered, ps corev1.PodSpec, c *corev1.Container) map[string]mount {
	t.Helper()
	adminPort := portOf(t, r.cfg.Admin.Listen)
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.IntValue() != adminPort {
			t.Errorf("probe for %s = %+v, want an HTTP GET on the admin port %d", name, p, adminPort)
		}
	}
	if c.LivenessProbe != nil && c.ReadinessProbe != nil && c.LivenessProbe.HTTPGet.Path == c.ReadinessProbe.HTTPGet.Path {
		t.Error("liveness and readiness probe the same path")
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Fatalf("no preStop sleep: %+v", c.Lifecycle)
	}
	sleep := c.Lifecycle.PreStop.Sleep.Seconds
	if ps.TerminationGracePeriodSeconds == nil {
		t.Error("no terminationGracePeriodSeconds: the default 30s may end the drain")
	} else {
		grace := *ps.TerminationGracePeriodSeconds
		if float64(grace) <= float64(sleep)+r.cfg.Limits.DrainTimeout.D().Seconds() {
			t.Errorf("terminationGracePeriodSeconds %d <= preStop %d + drain_timeout %v: the kubelet would kill the drain", grace, sleep, r.cfg.Limits.DrainTimeout.D())
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext = %+v", sc)
	}
	if r.gateway {
		psc := ps.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("pod securityContext = %+v", psc)
		}
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Error("the service account token is mounted; Strait does not use the API")
		}
		if ps.Affinity == nil || ps.Affinity.PodAntiAffinity == nil {
			t.Error("no pod anti-affinity")
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want a CPU request and a memory limit", c.Resources)
	}
	// The image's own entrypoint runs these args (Dockerfile CMD is the same).
	if len(c.Command) != 0 || len(c.Args) != 3 || c.Args[0] != "run" || c.Args[1] != "--config" {
		t.Errorf("command %q args %q, want the image entrypoint with run --config FILE", c.Command, c.Args)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	mounts := map[string]mount{}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("mount %s: no volume %s in the pod", m.MountPath, m.Name)
			continue
		}
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.MountPath)
		}
		mt := mount{path: m.MountPath, volume: v}
		if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0) {
			t.Errorf("Secret volume %s is readable by others: mode %v", v.Name, v.Secret.DefaultMode)
		}
		if v.ConfigMap == nil && v.Secret == nil {
			t.Errorf("mount %s: volume %s is neither a ConfigMap nor a Secret", m.MountPath, m.Name)
		}
		mounts[m.MountPath] = mt
	}
	// The config file the args name is the rendered ConfigMap's strait.yaml.
	if len(c.Args) == 3 {
		dir, file := filepath.Split(c.Args[2])
		m, ok := mounts[filepath.Clean(dir)]
		if !ok || m.volume.ConfigMap == nil || m.volume.ConfigMap.Name != r.configMap.Name || file != "strait.yaml" {
			t.Errorf("--config %s is not the ConfigMap %s's strait.yaml (mounts %v)", c.Args[2], r.configMap.Name, mounts)
		}
	}
	return mounts
}

type mount struct {
	path   string
	volume corev1.Volume
}

func (m mount) String() string { return m.path + "←" + m.volume.Name }

func checkServiceMonitor(t *testing.T, r *rendered) {
	t.Helper()
	m := r.monitor
	if m == nil {
		t.Fatal("serviceMonitor.enabled but no ServiceMonitor rendered")
	}
	var sm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port          string `json:"port"`
				Path          string `json:"path"`
				Interval      string `json:"interval"`
				ScrapeTimeout string `json:"scrapeTimeout"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	b, _ := yaml.Marshal(m)
	if err := yaml.UnmarshalStrict(b, &sm, yaml.DisallowUnknownFields); err != nil {
		// Only the fields the chart sets are declared above; a new one
		// should be added here, a typo should not.
		t.Errorf("ServiceMonitor has unexpected fields: %v", err)
	}
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Metadata.Namespace != namespace || sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor apiVersion %q labels %v", sm.APIVersion, sm.Metadata.Labels)
	}
	// It must select exactly the admin Service, and name one of its ports.
	var selected []string
	for name, s := range r.services {
		match := true
		for k, v := range sm.Spec.Selector.MatchLabels {
			if s.Labels[k] != v {
				match = false
			}
		}
		if match {
			selected = append(selected, name)
		}
	}
	if !reflect.DeepEqual(selected, []string{release + "-strait-admin"}) {
		t.Errorf("ServiceMonitor selects Services %v, want only the admin Service", selected)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Spec.Endpoints[0].Port != "admin" {
		t.Errorf("ServiceMonitor endpoints = %+v", sm.Spec.Endpoints)
	}
}

// validateConfig checks the rendered strait.yaml with Strait's own
// validation. The files it names live in mounted Secrets, so each is first
// checked to lie under a read-only Secret mount (when mounts is given),
// then stood in for by a file in a temp dir: an empty one for certificates
// (Validate only checks they exist), a real keyring from `strait keys
// generate` with every key id the rules name.
func validateConfig(t *testing.T, r *rendered, mounts map[string]mount) {
	t.Helper()
	tmp := t.TempDir()
	bin := straitBin(t)
	var generic any
	if err := yaml.Unmarshal(r.straitYAML, &generic); err != nil {
		t.Fatal(err)
	}
	keyIDs := map[string]bool{}
	var paths []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				walk(k, e)
			}
		case []any:
			for _, e := range v {
				walk(key, e)
			}
		case string:
			if strings.HasPrefix(v, "/") {
				paths = append(paths, v)
			}
			if key == "key_id" {
				keyIDs[v] = true
			}
		}
	}
	walk("", generic)
	if len(paths) == 0 && (r.values["keyring"] != nil || r.cfg.Upstream.TLS.Enabled) {
		t.Logf("no file paths in the config")
	}
	text := string(r.straitYAML)
	for _, p := range paths {
		if !strings.HasPrefix(p, "/etc/strait/") {
			t.Errorf("config names %s, outside the chart's mounts under /etc/strait", p)
			continue
		}
		if mounts != nil {
			var covering *mount
			for mp, m := range mounts {
				if strings.HasPrefix(p, mp+"/") {
					covering = &m
				}
			}
			if covering == nil || covering.volume.Secret == nil {
				t.Errorf("config names %s, which no read-only Secret mount provides (mounts %v)", p, mounts)
			} else if items := covering.volume.Secret.Items; len(items) > 0 && !slices.ContainsFunc(items, func(k corev1.KeyToPath) bool { return covering.path+"/"+k.Path == p }) {
				t.Errorf("config names %s, but Secret %s projects only %v", p, covering.volume.Secret.SecretName, items)
			}
		}
		local := filepath.Join(tmp, strings.TrimPrefix(p, "/etc/strait/"))
		if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(local); err == nil {
			continue
		}
		if strings.Contains(p, "/keyring/") {
			for id := range keyIDs {
				runStrait(t, bin, 0, "keys", "generate", "--keyring", local, "--key", id)
			}
		} else if err := os.WriteFile(local, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text = strings.ReplaceAll(text, "/etc/strait/", tmp+"/")
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("the rendered strait.yaml does not validate:\n%v\n%s", err, r.straitYAML)
	}
	f := filepath.Join(tmp, "strait.yaml")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// validate takes the same flags as run: the container's own args with
	// the command swapped and the config path pointed at the local copy.
	args := []string{"validate", "--config", f}
	out := runStrait(t, bin, 0, args...)
	if !strings.Contains(out, "configuration ok") {
		t.Errorf("strait validate: %s", out)
	}
}

// straitBin is $STRAIT_BIN (make test sets it) or ./cmd/strait built once
// for this test binary.
func straitBin(t *testing.T) string {
	t.Helper()
	return straitbin.Get(t)
}

func TestMain(m *testing.M) {
	code := m.Run()
	straitbin.Cleanup()
	os.Exit(code)
}

// runStrait runs the binary and checks its exit code (-1: any failure).
func runStrait(t *testing.T, bin string, wantCode int, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	if wantCode >= 0 && code != wantCode || wantCode < 0 && code == 0 {
		t.Fatalf("strait %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, wantCode, out.String())
	}
	return out.String()
}

func straitContainer(t *testing.T, cs []corev1.Container) *corev1.Container {
	t.Helper()
	for i := range cs {
		if cs[i].Name == "strait" {
			return &cs[i]
		}
	}
	t.Fatalf("no container named strait in %d containers", len(cs))
	return nil
}

func containerPortNamed(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

func envValue(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func portOf(t *testing.T, hostPort string) int {
	t.Helper()
	i := strings.LastIndexByte(hostPort, ':')
	p, err := strconv.Atoi(hostPort[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("%q is not host:port", hostPort)
	}
	return p
}

// TestAppVersionInSync: the sidecar templates cannot read this chart's
// Chart.yaml from an application chart, so the default tag is spelt out in
// _helpers.tpl; it must be Chart.yaml's appVersion.
func TestAppVersionInSync(t *testing.T) {
	ch := loadChart(t)
	tpl := readFile(t, filepath.Join(chartDir, "templates", "_helpers.tpl"))
	want := `{{- define "strait.appVersion" -}}` + ch.Metadata.AppVersion + `{{- end -}}`
	if !strings.Contains(tpl, want) {
		t.Errorf("_helpers.tpl does not define strait.appVersion as Chart.yaml's appVersion %q", ch.Metadata.AppVersion)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKeyringFromSecretVolume reproduces the file mode a keyring gets in
// the pod: a Secret volume's files are root's, so the non-root container
// reads them through the pod's fsGroup, and the kubelet gives read-only
// volume files group read (mode 0440) whatever defaultMode says. The rule of
// every secret file (internal/secfile: nothing for others, no group write)
// accepts that, so `strait validate` must pass on it.
func TestKeyringFromSecretVolume(t *testing.T) {
	r := renderCI(t, filepath.Join(chartDir, "ci", "gateway-ports.yaml"))
	ps := r.deployment.Spec.Template.Spec
	var vol *corev1.Volume
	for i := range ps.Volumes {
		if ps.Volumes[i].Name == "strait-keyring" {
			vol = &ps.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.DefaultMode == nil || ps.SecurityContext == nil || ps.SecurityContext.FSGroup == nil {
		t.Fatalf("keyring volume %+v, pod securityContext %+v", vol, ps.SecurityContext)
	}
	mode := os.FileMode(*vol.Secret.DefaultMode) | 0o440 // the kubelet's fsGroup treatment of read-only volumes
	bin := straitBin(t)
	dir := t.TempDir()
	keyring := filepath.Join(dir, "keys.json")
	runStrait(t, bin, 0, "keys", "generate", "--keyring", keyring, "--key", "payments-kek")
	if err := os.Chmod(keyring, mode); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "strait.yaml")
	if err := os.WriteFile(cfg, []byte(`upstream: {bootstrap: ["kafka:9092"]}
listen: {bootstrap: "127.0.0.1:9092", broker_port_base: 19092}
interceptors:
  - name: encrypt
    config:
      kms: {local: {keyring: `+keyring+`}}
      rules: [{topics: [payments], key_id: payments-kek}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runStrait(t, bin, 0, "validate", "--config", cfg)
	t.Logf("keyring with the Secret volume's mode %04o: %s", mode, strings.TrimSpace(out))
}
