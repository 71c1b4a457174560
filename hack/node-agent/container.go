// Container environment, command, service-account token and probes of the
// node agent, a development harness for memstress (see main.go).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// containerEnv returns the container's environment in definition order.
// Besides the pod's env and envFrom it sets PATH, HOSTNAME, HOME, and the
// KUBERNETES_SERVICE_* variables pointing at the apiserver on loopback.
// Service links are never added, because they would name Service cluster
// IPs, which nothing on this machine serves.
func (a *agent) containerEnv(pod *v1.Pod, c *v1.Container, podIP string) (*orderedEnv, error) {
	env := newOrderedEnv()
	env.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	env.set("HOSTNAME", pod.Name)
	env.set("HOME", "/root")
	env.set("KUBERNETES_SERVICE_HOST", a.apiHost)
	env.set("KUBERNETES_SERVICE_PORT", a.apiPort)
	env.set("KUBERNETES_SERVICE_PORT_HTTPS", a.apiPort)
	env.set("KUBERNETES_PORT", "tcp://"+net.JoinHostPort(a.apiHost, a.apiPort))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, source := range c.EnvFrom {
		values, err := a.envFromSource(ctx, pod.Namespace, source)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(values))
		for key := range values {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			env.set(source.Prefix+key, values[key])
		}
	}
	for _, variable := range c.Env {
		if variable.ValueFrom == nil {
			env.set(variable.Name, expandReferences(variable.Value, env.lookup))
			continue
		}
		value, err := a.envValueFrom(ctx, pod, c, podIP, variable)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", variable.Name, err)
		}
		env.set(variable.Name, value)
	}
	return env, nil
}

func (a *agent) envFromSource(ctx context.Context, namespace string, source v1.EnvFromSource) (map[string]string, error) {
	optional := func(p *bool) bool { return p != nil && *p }
	switch {
	case source.ConfigMapRef != nil:
		cm, err := a.client.CoreV1().ConfigMaps(namespace).Get(ctx, source.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if optional(source.ConfigMapRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom ConfigMap %s: %w", source.ConfigMapRef.Name, err)
		}
		return cm.Data, nil
	case source.SecretRef != nil:
		secret, err := a.client.CoreV1().Secrets(namespace).Get(ctx, source.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			if optional(source.SecretRef.Optional) {
				return nil, nil
			}
			return nil, fmt.Errorf("envFrom Secret %s: %w", source.SecretRef.Name, err)
		}
		values := map[string]string{}
		for key, value := range secret.Data {
			values[key] = string(value)
		}
		return values, nil
	}
	return nil, nil
}

// envValueFrom resolves a valueFrom: the downward API (fieldRef and
// resourceFieldRef), ConfigMap keys and Secret keys.
func (a *agent) envValueFrom(ctx context.Context, pod *v1.Pod, c *v1.Container, podIP string, variable v1.EnvVar) (string, error) {
	from := variable.ValueFrom
	switch {
	case from.FieldRef != nil:
		return podFieldValue(pod, from.FieldRef.FieldPath, podIP)
	case from.ResourceFieldRef != nil:
		return a.resourceFieldValue(pod, c, from.ResourceFieldRef)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if value, ok := cm.Data[ref.Key]; ok {
				return value, nil
			}
			err = fmt.Errorf("key %s not found in ConfigMap %s", ref.Key, ref.Name)
		}
		if ref.Optional != nil && *ref.Optional {
			return "", nil
		}
		return "", err
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		secret, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if value, ok := secret.Data[ref.Key]; ok {
				return string(value), nil
			}
			err = fmt.Errorf("key %s not found in Secret %s", ref.Key, ref.Name)
		}
		if ref.Optional != nil && *ref.Optional {
			return "", nil
		}
		return "", err
	}
	return "", fmt.Errorf("unsupported valueFrom source")
}

// podFieldValue returns a downward-API field. podIP is passed separately
// because it is assigned before the status carrying it is written.
func podFieldValue(pod *v1.Pod, path, podIP string) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// subscript parses PREFIX['KEY'] and returns KEY.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// resourceFieldValue returns a container's request or limit divided by the
// divisor and rounded up. A missing limit reads as the node's allocatable
// amount, as on a kubelet.
func (a *agent) resourceFieldValue(pod *v1.Pod, c *v1.Container, ref *v1.ResourceFieldSelector) (string, error) {
	target := c
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		target = nil
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				target = &pod.Spec.Containers[i]
			}
		}
		if target == nil {
			return "", fmt.Errorf("resourceFieldRef names unknown container %q", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	resourceName := v1.ResourceName(name)
	values := target.Resources.Requests
	if kind == "limits" {
		values = target.Resources.Limits
	}
	quantity, found := values[resourceName]
	if !found && kind == "limits" {
		switch resourceName {
		case v1.ResourceMemory:
			quantity, found = a.cfg.nodeMemory, true
		case v1.ResourceCPU:
			quantity, found = a.cfg.nodeCPU, true
		}
	}
	if !found {
		quantity = resource.Quantity{}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if resourceName == v1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(quantity.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(quantity.Value())/float64(divisor.Value()))), 10), nil
}

// orderedEnv is an environment that keeps the order of first definition.
type orderedEnv struct {
	names  []string
	values map[string]string
}

func newOrderedEnv() *orderedEnv { return &orderedEnv{values: map[string]string{}} }

func (e *orderedEnv) set(name, value string) {
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = value
}

func (e *orderedEnv) lookup(name string) (string, bool) {
	value, ok := e.values[name]
	return value, ok
}

func envList(e *orderedEnv) []string {
	list := make([]string, 0, len(e.names))
	for _, name := range e.names {
		list = append(list, name+"="+e.values[name])
	}
	return list
}

// expandReferences replaces $(NAME) with the value of NAME, with the
// kubelet's rules: "$$" is a literal "$", and a reference to an undefined
// name, or one that is not closed, stays as written.
func expandReferences(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			out.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			out.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				out.WriteString(s[i:])
				return out.String()
			}
			name := s[i+2 : i+2+end]
			if value, ok := lookup(name); ok && name != "" {
				out.WriteString(value)
			} else {
				out.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			out.WriteByte('$')
		}
	}
	return out.String()
}

// resolveCommand returns the executable and argv of a container. A
// container without a command runs the entrypoint that -image-entrypoint
// maps its image to. command[0] is used as given when it is an absolute
// path that exists, else its base name is looked up in -bin-dir, then in
// PATH.
func (a *agent) resolveCommand(c *v1.Container, env *orderedEnv) (string, []string, error) {
	command := c.Command
	if len(command) == 0 {
		entrypoint := a.cfg.entrypoints.lookup(c.Image)
		if entrypoint == "" {
			return "", nil, fmt.Errorf("container has no command and image %q matches no -image-entrypoint rule", c.Image)
		}
		command = []string{entrypoint}
	}
	var argv []string
	for _, arg := range append(append([]string{}, command...), c.Args...) {
		argv = append(argv, expandReferences(arg, env.lookup))
	}
	name := argv[0]
	if filepath.IsAbs(name) {
		if isExecutable(name) {
			return name, argv, nil
		}
		name = filepath.Base(name)
	}
	if candidate := filepath.Join(a.cfg.binDir, filepath.Base(name)); isExecutable(candidate) {
		return candidate, argv, nil
	}
	path, err := exec.LookPath(filepath.Base(name))
	if err != nil {
		return "", nil, fmt.Errorf("executable %q not found in %s or PATH", argv[0], a.cfg.binDir)
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", nil, err
	}
	return path, argv, nil
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// --- service account ------------------------------------------------------

// mountsServiceAccount reports whether a pod gets the token directory:
// when a container mounts a volume at the standard path (the ServiceAccount
// admission plugin adds one), or when automounting is on.
func mountsServiceAccount(pod *v1.Pod) bool {
	for _, c := range append(append([]v1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, mount := range c.VolumeMounts {
			if mount.MountPath == serviceAccountPath {
				return true
			}
		}
	}
	automount := pod.Spec.AutomountServiceAccountToken
	return automount == nil || *automount
}

const tokenLifetime = 3600 // seconds

// writeToken requests a token bound to the pod with the TokenRequest API
// and writes token, ca.crt and namespace into the pod's service-account
// directory. Each file is replaced by a rename, so a reader never sees a
// partial file.
func (w *podWorker) writeToken() error {
	pod := w.currentPod()
	w.mu.Lock()
	dir := w.accountDir
	w.mu.Unlock()
	if dir == "" {
		return nil
	}
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	expiration := int64(tokenLifetime)
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &expiration,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	response, err := w.a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, account, request, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("request a token for service account %s/%s: %w", pod.Namespace, account, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{
		"token":     []byte(response.Status.Token),
		"ca.crt":    w.a.caData,
		"namespace": []byte(pod.Namespace),
	}
	for name, data := range files {
		temporary := filepath.Join(dir, "."+name+".new")
		if err := os.WriteFile(temporary, data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(temporary, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.tokenExpiry = response.Status.ExpirationTimestamp.Time
	w.mu.Unlock()
	w.log.Info("service-account token written", "serviceAccount", account, "expires", response.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
	return nil
}

// tokenRefreshDelay returns the time until 80% of the token's lifetime has
// passed, or an hour when the pod has no token.
func (w *podWorker) tokenRefreshDelay() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tokenExpiry.IsZero() {
		return time.Hour
	}
	remaining := time.Until(w.tokenExpiry)
	return max(time.Second, remaining*8/10)
}

// --- probes -----------------------------------------------------------------

// runProbes runs the startup probe until it succeeds, then the readiness and
// liveness probes, until ctx ends with the process.
func (c *container) runProbes(ctx context.Context) {
	w := c.w
	if p := c.spec.StartupProbe; p != nil {
		if !c.probeLoop(ctx, "startup", p, true) {
			return
		}
		w.mu.Lock()
		c.started = true
		c.ready = c.spec.ReadinessProbe == nil
		w.mu.Unlock()
		w.kick()
	}
	if p := c.spec.ReadinessProbe; p != nil {
		go c.probeLoop(ctx, "readiness", p, false)
	}
	if p := c.spec.LivenessProbe; p != nil {
		go c.probeLoop(ctx, "liveness", p, false)
	}
}

// probeLoop runs one probe every periodSeconds after initialDelaySeconds and
// applies successThreshold and failureThreshold. A startup probe (once
// true) returns on its first success. Readiness results set the container's
// ready flag. A liveness or startup failure stops the container.
func (c *container) probeLoop(ctx context.Context, kind string, p *v1.Probe, once bool) bool {
	w := c.w
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	successThreshold, failureThreshold := max(p.SuccessThreshold, 1), max(p.FailureThreshold, 1)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	successes, failures := int32(0), int32(0)
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for {
		err := c.probeOnce(ctx, p, timeout)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			successes, failures = successes+1, 0
		} else {
			successes, failures = 0, failures+1
			w.log.Info("probe failed", "container", c.spec.Name, "probe", kind, "failures", failures, "err", err)
		}
		switch {
		case kind == "readiness" && successes >= successThreshold:
			c.setReady(true)
		case kind == "readiness" && failures >= failureThreshold:
			c.setReady(false)
		case once && successes >= successThreshold:
			return true
		case kind != "readiness" && failures >= failureThreshold:
			w.log.Info("probe failed too often; stopping container", "container", c.spec.Name, "probe", kind)
			grace := containerGrace(w.currentPod())
			if p.TerminationGracePeriodSeconds != nil {
				grace = time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
			}
			go c.kill(grace, nil, kind+" probe failed")
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-ticker.C:
		}
	}
}

func (c *container) setReady(ready bool) {
	w := c.w
	w.mu.Lock()
	changed := c.ready != ready && c.started
	if changed {
		c.ready = ready
	}
	w.mu.Unlock()
	if changed {
		w.log.Info("container readiness changed", "container", c.spec.Name, "ready", ready)
		w.kick()
	}
}

// probeOnce runs one httpGet, tcpSocket or exec probe. Probes only go to
// loopback addresses. An exec probe runs on the host with the container's
// environment but outside its cgroup and mount namespace.
func (c *container) probeOnce(ctx context.Context, p *v1.Probe, timeout time.Duration) error {
	w := c.w
	w.mu.Lock()
	podIP := w.podIP
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		host, err := probeHost(p.HTTPGet.Host, podIP)
		if err != nil {
			return err
		}
		port, err := c.probePort(p.HTTPGet.Port)
		if err != nil {
			return err
		}
		scheme := strings.ToLower(string(p.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := p.HTTPGet.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		request, err := http.NewRequestWithContext(ctx, http.MethodGet,
			scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return err
		}
		request.Header.Set("User-Agent", "kube-probe/1.35")
		for _, header := range p.HTTPGet.HTTPHeaders {
			request.Header.Set(header.Name, header.Value)
		}
		response, err := probeClient.Do(request)
		if err != nil {
			return err
		}
		response.Body.Close()
		if response.StatusCode < 200 || response.StatusCode >= 400 {
			return fmt.Errorf("HTTP status %d", response.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		host, err := probeHost(p.TCPSocket.Host, podIP)
		if err != nil {
			return err
		}
		port, err := c.probePort(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		var dialer net.Dialer
		conn, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil && len(p.Exec.Command) > 0:
		env, err := w.a.containerEnv(w.currentPod(), c.spec, podIP)
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...)
		cmd.Env = envList(env)
		return cmd.Run()
	}
	return fmt.Errorf("probe has no supported handler (grpc probes are not implemented)")
}

// probeClient skips TLS verification, as the kubelet's HTTPS probes do.
var probeClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // probes do not verify, as on a kubelet
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// probeHost returns the probe target: the pod IP, or the probe's host when
// that is a loopback address.
func probeHost(host, podIP string) (string, error) {
	if host == "" {
		return podIP, nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return host, nil
	}
	return "", fmt.Errorf("probe host %q is not a loopback address; the node agent only probes loopback", host)
}

func (c *container) probePort(port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.spec.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container has no port named %q", port.StrVal)
}
