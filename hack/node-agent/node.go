// Nodes of the node agent, a development harness for memstress (see
// main.go): registration, status heartbeats, Leases, the kubelet
// containerLogs endpoint, and binding for clusters without a scheduler.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	leaseNamespace       = "kube-node-lease"
	leaseDurationSeconds = 40
	kubeletVersion       = "v1.35.4"
)

// sortedNodes returns the agent's node names in order.
func (a *agent) sortedNodes() []string {
	names := make([]string, 0, len(a.nodes))
	for name := range a.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// registerNodes creates the Node objects that do not exist yet and writes
// a Ready status to each.
func (a *agent) registerNodes(ctx context.Context) error {
	for _, name := range a.sortedNodes() {
		node := &v1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname":  name,
				"kubernetes.io/os":        "linux",
				"kubernetes.io/arch":      runtime.GOARCH,
				"memstress.io/node-agent": "true",
			},
		}}
		_, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("register node %s: %w", name, err)
		}
		if err := a.patchNodeStatus(ctx, name, true); err != nil {
			return err
		}
		if err := a.setNotReadyTaint(ctx, name, false); err != nil {
			return err
		}
		a.log.Info("node registered", "node", name)
	}
	return nil
}

func (a *agent) nodeStatus(ready bool) v1.NodeStatus {
	resources := v1.ResourceList{
		v1.ResourceCPU:              a.cfg.nodeCPU,
		v1.ResourceMemory:           a.cfg.nodeMemory,
		v1.ResourcePods:             *resource.NewQuantity(int64(a.cfg.maxPods), resource.DecimalSI),
		v1.ResourceEphemeralStorage: resource.MustParse("10Gi"),
	}
	now := metav1.Now()
	since := metav1.NewTime(a.started)
	condition := func(kind v1.NodeConditionType, reason, message string) v1.NodeCondition {
		return v1.NodeCondition{Type: kind, Status: v1.ConditionFalse, Reason: reason, Message: message,
			LastHeartbeatTime: now, LastTransitionTime: since}
	}
	readyCondition := v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady",
		Message: "memstress node agent is posting ready status", LastHeartbeatTime: now, LastTransitionTime: since}
	if !ready {
		readyCondition.Status, readyCondition.Reason = v1.ConditionFalse, "KubeletNotReady"
		readyCondition.Message, readyCondition.LastTransitionTime = "memstress node agent stopped", now
	}
	var uname syscall.Utsname
	_ = syscall.Uname(&uname)
	return v1.NodeStatus{
		Capacity:    resources,
		Allocatable: resources,
		Conditions: []v1.NodeCondition{
			condition(v1.NodeMemoryPressure, "KubeletHasSufficientMemory", "no memory pressure is reported"),
			condition(v1.NodeDiskPressure, "KubeletHasNoDiskPressure", "no disk pressure is reported"),
			condition(v1.NodePIDPressure, "KubeletHasSufficientPID", "no PID pressure is reported"),
			readyCondition,
		},
		Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: v1.NodeDaemonEndpoints{
			KubeletEndpoint: v1.DaemonEndpoint{Port: int32(a.cfg.logsPort)},
		},
		NodeInfo: v1.NodeSystemInfo{
			KubeletVersion:          kubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			KernelVersion:           utsString(uname.Release[:]),
			OSImage:                 "memstress node agent (processes on the host)",
			ContainerRuntimeVersion: "memstress://" + kubeletVersion,
		},
	}
}

func utsString(field []int8) string {
	var b strings.Builder
	for _, c := range field {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// setNotReadyTaint adds or removes the node.kubernetes.io/not-ready
// NoSchedule taint. The apiserver adds it to every new Node, and the
// node-lifecycle controller, which would remove it from a Ready node, is not
// among the controllers that hack/local-up.sh runs, so the agent keeps it in
// step with its Ready condition.
func (a *agent) setNotReadyTaint(ctx context.Context, name string, present bool) error {
	node, err := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node %s: %w", name, err)
	}
	var taints []v1.Taint
	found := false
	for _, taint := range node.Spec.Taints {
		if taint.Key == v1.TaintNodeNotReady && taint.Effect == v1.TaintEffectNoSchedule {
			found = true
			if !present {
				continue
			}
		}
		taints = append(taints, taint)
	}
	if found == present {
		return nil
	}
	if present {
		taints = append(taints, v1.Taint{Key: v1.TaintNodeNotReady, Effect: v1.TaintEffectNoSchedule})
	}
	node.Spec.Taints = taints
	if _, err := a.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the taints of node %s: %w", name, err)
	}
	return nil
}

// patchNodeStatus writes the whole node status with a merge patch.
func (a *agent) patchNodeStatus(ctx context.Context, name string, ready bool) error {
	patch, err := json.Marshal(map[string]any{"status": a.nodeStatus(ready)})
	if err != nil {
		return err
	}
	_, err = a.client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("update the status of node %s: %w", name, err)
	}
	return nil
}

// runNodeLoop keeps a node's Ready condition and Lease fresh until ctx ends.
func (a *agent) runNodeLoop(ctx context.Context, name string) {
	statusTicker := time.NewTicker(a.cfg.statusInterval)
	defer statusTicker.Stop()
	leaseTicker := time.NewTicker(a.cfg.leaseInterval)
	defer leaseTicker.Stop()
	a.renewLease(ctx, name)
	for {
		select {
		case <-ctx.Done():
			return
		case <-statusTicker.C:
			err := a.patchNodeStatus(ctx, name, true)
			if err == nil {
				err = a.setNotReadyTaint(ctx, name, false)
			}
			if err != nil && ctx.Err() == nil {
				a.log.Error("node heartbeat failed", "node", name, "err", err)
			}
		case <-leaseTicker.C:
			a.renewLease(ctx, name)
		}
	}
}

// renewLease creates or renews the node's Lease in kube-node-lease, owned by
// the Node so that deleting the Node deletes it.
func (a *agent) renewLease(ctx context.Context, name string) {
	leases := a.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		node, nodeErr := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if nodeErr != nil {
			err = nodeErr
			break
		}
		duration := int32(leaseDurationSeconds)
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: node.UID}}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &duration, RenewTime: &now},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	case err == nil:
		lease.Spec.RenewTime = &now
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil && ctx.Err() == nil {
		a.log.Error("lease renewal failed", "node", name, "err", err)
	}
}

// markNodesNotReady reports the nodes NotReady when the agent stops, so the
// scheduler stops placing pods on them at once instead of after the
// Lease expires.
func (a *agent) markNodesNotReady() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range a.sortedNodes() {
		if err := a.patchNodeStatus(ctx, name, false); err != nil {
			a.log.Error("failed to mark node NotReady", "node", name, "err", err)
		}
		if err := a.setNotReadyTaint(ctx, name, true); err != nil {
			a.log.Error("failed to taint node NotReady", "node", name, "err", err)
		}
	}
}

// --- kubelet containerLogs endpoint ----------------------------------------

// serveContainerLogs serves GET /containerLogs/NAMESPACE/POD/CONTAINER over
// HTTPS on 127.0.0.1, which kube-apiserver calls for `kubectl logs`. The
// certificate is self-signed and made at start, and requests are not
// authenticated: the apiserver in hack/local-up.sh has no kubelet client
// certificate and does not verify kubelet certificates.
func (a *agent) serveContainerLogs(ctx context.Context) error {
	certificate, err := selfSignedCertificate()
	if err != nil {
		return err
	}
	address := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.cfg.logsPort))
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("listen on %s for the containerLogs endpoint (change -kubelet-port): %w", address, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.handleContainerLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{certificate}, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := server.ServeTLS(listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("containerLogs server failed", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()
	a.log.Info("serving containerLogs", "address", address)
	return nil
}

// handleContainerLogs writes a container log file. It supports the
// tailLines, limitBytes and follow query parameters. It ignores previous and
// timestamps, because the agent keeps one file per container across
// restarts and writes no timestamps.
func (a *agent) handleContainerLogs(w http.ResponseWriter, r *http.Request) {
	namespace, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	for _, part := range []string{namespace, pod, container} {
		if part == "" || part == "." || part == ".." || strings.Contains(part, "/") {
			http.Error(w, "invalid namespace, pod or container name", http.StatusBadRequest)
			return
		}
	}
	path := filepath.Join(a.podLogDir(namespace, pod), container+".log")
	file, err := os.Open(path)
	if err != nil {
		http.Error(w, fmt.Sprintf("no log for container %s of pod %s/%s", container, namespace, pod), http.StatusNotFound)
		return
	}
	defer file.Close()
	query := r.URL.Query()
	if tail, err := strconv.Atoi(query.Get("tailLines")); err == nil && tail >= 0 {
		if err := seekToTail(file, tail); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var out io.Writer = w
	if limit, err := strconv.ParseInt(query.Get("limitBytes"), 10, 64); err == nil && limit > 0 {
		out = &limitedWriter{w: w, remaining: limit}
	}
	w.Header().Set("Content-Type", "text/plain")
	if _, err := io.Copy(out, file); err != nil || query.Get("follow") != "true" {
		return
	}
	flusher, _ := w.(http.Flusher)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		if _, err := io.Copy(out, file); err != nil {
			return
		}
		if _, statErr := os.Stat(path); statErr != nil {
			return // the pod was deleted
		}
	}
}

// seekToTail positions file at the start of its last n lines.
func seekToTail(file *os.File, n int) error {
	var offsets []int64
	var offset int64
	reader := bufio.NewReader(file)
	for {
		line, err := reader.ReadBytes('\n')
		if len(line) > 0 {
			offsets = append(offsets, offset)
			offset += int64(len(line))
		}
		if err != nil {
			break
		}
	}
	start := offset
	if n < len(offsets) {
		start = offsets[len(offsets)-n]
	} else if len(offsets) > 0 {
		start = 0
	}
	if n == 0 {
		start = offset
	}
	_, err := file.Seek(start, io.SeekStart)
	return err
}

type limitedWriter struct {
	w         io.Writer
	remaining int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.remaining {
		p = p[:l.remaining]
	}
	n, err := l.w.Write(p)
	l.remaining -= int64(n)
	return n, err
}

func selfSignedCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "memstress-node-agent"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// --- binding without a scheduler -----------------------------------------

var bindCounter atomic.Uint64

// bindPod binds a pod that names no node to one of the agent's nodes,
// round-robin, when -bind-unscheduled is set. It does not check resources.
func (a *agent) bindPod(pod *v1.Pod) {
	if pod.DeletionTimestamp != nil || (pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != v1.DefaultSchedulerName) {
		return
	}
	nodes := a.sortedNodes()
	node := nodes[int(bindCounter.Add(1)-1)%len(nodes)]
	binding := &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     v1.ObjectReference{Kind: "Node", Name: node},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) {
		a.log.Error("failed to bind pod", "pod", pod.Namespace+"/"+pod.Name, "node", node, "err", err)
		return
	}
	if err == nil {
		a.log.Info("pod bound", "pod", pod.Namespace+"/"+pod.Name, "node", node)
	}
}
