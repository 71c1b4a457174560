// Command node-agent is a development harness for memstress, not part of the
// product. It plays the kubelet for the local control plane that
// hack/local-up.sh starts, on a machine without a container runtime.
//
// What it emulates: Ready nodes with a Lease each, and pods whose containers
// run as local processes. Each pod gets its own loopback address (127.0.0.x)
// and a memory cgroup per container under one parent named "memstress". It
// also gets a real service-account token bound to the pod, visible at the
// usual path in a private mount namespace, and downward-API environment
// variables. Readiness, liveness and startup probes run, container states
// carry OOMKilled and exit codes as the kubelet reports them, deletion is
// graceful, and a kubelet containerLogs endpoint makes `kubectl logs` work.
//
// What it does not emulate: images, because a container runs a binary from
// the host (see resolveCommand). There is no file-system isolation other
// than the service-account mount, and no network isolation, because every
// pod shares the host network stack. Also missing: volumes other than the
// service-account token, exec/attach/port-forward, CPU limits, node-pressure
// eviction, Events, and Services (nothing may ever send traffic to the
// service cluster IP range on this machine).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// config holds the command-line settings.
type config struct {
	kubeconfig      string
	nodeCount       int
	nodePrefix      string
	nodeMemory      resource.Quantity
	nodeCPU         resource.Quantity
	maxPods         int
	binDir          string
	podLogDir       string
	stateDir        string
	podIPRange      string
	entrypoints     entrypointRules
	logsPort        int
	shutdownGrace   time.Duration
	statusInterval  time.Duration
	leaseInterval   time.Duration
	bindUnscheduled bool
}

// agent is the state shared by every node and pod of one agent process.
type agent struct {
	cfg     config
	log     *slog.Logger
	client  kubernetes.Interface
	apiHost string
	apiPort string
	caData  []byte
	selfExe string
	nodes   map[string]bool
	cgroups *cgroupManager
	ips     *ipPool
	started time.Time
	// ctx ends when the agent gets SIGTERM or SIGINT. Retries of API
	// writes stop with it.
	ctx context.Context

	mu       sync.Mutex
	stopping bool
	workers  map[types.UID]*podWorker
	// finished lists pods whose containers ended and were cleaned up, so a
	// later update event does not run them again. Entries go when the pod
	// object is deleted.
	finished map[types.UID]bool
	// finalizing lists pods whose final delete is being sent or retried.
	finalizing map[types.UID]bool
	wg         sync.WaitGroup
	podStore   cache.Store
}

func main() {
	// The agent re-executes itself as the first process of every container;
	// see containerInit.
	if len(os.Args) > 1 && os.Args[1] == containerInitArg {
		containerInit(os.Args[2:])
		return
	}
	cfg := parseFlags()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(cfg, logger); err != nil {
		logger.Error("node agent failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags() config {
	cfg := config{
		nodeMemory:  resource.MustParse("4Gi"),
		nodeCPU:     resource.MustParse("2"),
		entrypoints: defaultEntrypoints(),
	}
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", ".local/kubeconfig", "kubeconfig of a cluster administrator")
	flag.IntVar(&cfg.nodeCount, "nodes", 2, "number of nodes to register")
	flag.StringVar(&cfg.nodePrefix, "node-prefix", "memstress-node-", "node names are this prefix plus 1, 2, ...")
	flag.Var(quantityFlag{&cfg.nodeMemory}, "node-memory", "memory capacity of each node, as a Kubernetes quantity; also the limit of the node's cgroup")
	flag.Var(quantityFlag{&cfg.nodeCPU}, "node-cpu", "CPU capacity of each node, as a Kubernetes quantity (not enforced)")
	flag.IntVar(&cfg.maxPods, "max-pods", 110, "pod capacity of each node")
	flag.StringVar(&cfg.binDir, "bin-dir", "bin", "directory searched for a container's command before PATH")
	flag.StringVar(&cfg.podLogDir, "pod-log-dir", ".local/pods", "container logs go to DIR/<namespace>_<pod>/<container>.log")
	flag.StringVar(&cfg.stateDir, "state-dir", ".local/node-agent", "directory of the per-pod service-account files and of agent.lock, which allows one agent per directory")
	flag.StringVar(&cfg.podIPRange, "pod-ip-range", "127.0.0.10-127.0.0.250", "loopback addresses handed to pods, FIRST-LAST")
	flag.Var(&cfg.entrypoints, "image-entrypoint", "SUBSTRING=COMMAND: a container without a command whose image contains SUBSTRING runs COMMAND; repeatable, the first match wins, and the flag replaces the defaults")
	flag.IntVar(&cfg.logsPort, "kubelet-port", 10350, "HTTPS port on 127.0.0.1 for the kubelet containerLogs endpoint (0 disables it)")
	flag.DurationVar(&cfg.shutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, the maximum time pods get between SIGTERM and SIGKILL")
	flag.DurationVar(&cfg.statusInterval, "node-status-interval", 10*time.Second, "interval of node status heartbeats")
	flag.DurationVar(&cfg.leaseInterval, "lease-interval", 10*time.Second, "interval of node Lease renewals")
	flag.BoolVar(&cfg.bindUnscheduled, "bind-unscheduled", false, "bind pods without a node to the agent's nodes round-robin, for clusters without kube-scheduler")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "node-agent: unexpected argument %q; all settings are flags, see -h\n", flag.Arg(0))
		os.Exit(2)
	}
	if cfg.nodeCount < 1 {
		fmt.Fprintf(os.Stderr, "node-agent: -nodes must be at least 1, got %d\n", cfg.nodeCount)
		os.Exit(2)
	}
	return cfg
}

func run(cfg config, logger *slog.Logger) error {
	var err error
	a := &agent{
		cfg:        cfg,
		log:        logger,
		nodes:      map[string]bool{},
		workers:    map[types.UID]*podWorker{},
		finished:   map[types.UID]bool{},
		finalizing: map[types.UID]bool{},
		started:    time.Now(),
	}
	for _, dir := range []*string{&a.cfg.binDir, &a.cfg.podLogDir, &a.cfg.stateDir} {
		if *dir, err = filepath.Abs(*dir); err != nil {
			return err
		}
	}
	// /proc/self/exe stays valid when a rebuild removes the binary's file.
	a.selfExe = "/proc/self/exe"
	restConfig, err := clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", cfg.kubeconfig, err)
	}
	restConfig.QPS, restConfig.Burst = 50, 100
	restConfig.UserAgent = "memstress-node-agent"
	if err := a.loadAPIServerEndpoint(restConfig); err != nil {
		return err
	}
	if a.client, err = kubernetes.NewForConfig(restConfig); err != nil {
		return err
	}
	if a.ips, err = newIPPool(cfg.podIPRange); err != nil {
		return err
	}
	// The lock comes before any cgroup is touched: a second agent would
	// otherwise remove the node cgroups of the first when it exits.
	lock, err := lockStateDir(a.cfg.stateDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if a.cgroups, err = newCgroupManager(logger); err != nil {
		return err
	}
	for i := 1; i <= cfg.nodeCount; i++ {
		name := fmt.Sprintf("%s%d", cfg.nodePrefix, i)
		a.nodes[name] = true
		if err := a.cgroups.ensureNode(name, cfg.nodeMemory.Value()); err != nil {
			a.cgroups.removeNodes(a.nodes)
			return err
		}
		a.cgroups.removeStalePods(name)
	}
	logger.Info("agent starting", "nodes", cfg.nodeCount, "nodeMemory", cfg.nodeMemory.String(),
		"cgroupParent", a.cgroups.parent, "cgroupVersion", a.cgroups.version, "apiserver", restConfig.Host)

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	a.ctx = ctx

	if cfg.logsPort > 0 {
		if err := a.serveContainerLogs(ctx); err != nil {
			a.cgroups.removeNodes(a.nodes)
			return err
		}
	}
	if err := a.registerNodes(ctx); err != nil {
		a.cgroups.removeNodes(a.nodes)
		return err
	}
	var nodeLoops sync.WaitGroup
	for name := range a.nodes {
		nodeLoops.Add(1)
		go func() {
			defer nodeLoops.Done()
			a.runNodeLoop(ctx, name)
		}()
	}

	a.startPodInformer(ctx)
	<-ctx.Done()
	logger.Info("agent stopping: terminating pods", "pods", a.workerCount())
	a.stopAllPods()
	nodeLoops.Wait()
	a.markNodesNotReady()
	a.cgroups.removeNodes(a.nodes)
	logger.Info("agent stopped")
	return nil
}

// loadAPIServerEndpoint stores the apiserver's loopback host and port for
// the KUBERNETES_SERVICE_* variables, and the cluster CA for ca.crt.
func (a *agent) loadAPIServerEndpoint(restConfig *rest.Config) error {
	u, err := url.Parse(restConfig.Host)
	if err != nil {
		return fmt.Errorf("invalid apiserver URL %q in %s: %w", restConfig.Host, a.cfg.kubeconfig, err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("apiserver %s is not on a loopback address; the node agent only works with a local control plane", restConfig.Host)
	}
	a.apiHost, a.apiPort = host, port
	a.caData = restConfig.CAData
	if len(a.caData) == 0 && restConfig.CAFile != "" {
		if a.caData, err = os.ReadFile(restConfig.CAFile); err != nil {
			return fmt.Errorf("read the cluster CA: %w", err)
		}
	}
	if len(a.caData) == 0 {
		return errors.New("the kubeconfig has no certificate-authority data, which pods need as ca.crt")
	}
	return nil
}

func (a *agent) startPodInformer(ctx context.Context) {
	factory := informers.NewSharedInformerFactory(a.client, podResyncPeriod)
	informer := factory.Core().V1().Pods().Informer()
	a.podStore = informer.GetStore()
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.handlePod(obj) },
		UpdateFunc: func(_, obj any) { a.handlePod(obj) },
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				a.handlePodGone(pod)
			}
		},
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	a.log.Info("pod informer synced")
}

// handlePod routes an added or updated pod to its worker, starting one for
// a pod newly bound to one of the agent's nodes.
func (a *agent) handlePod(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName == "" {
		if a.cfg.bindUnscheduled {
			go a.bindPod(pod)
		}
		return
	}
	if !a.nodes[pod.Spec.NodeName] {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w := a.workers[pod.UID]; w != nil {
		w.update(pod)
		return
	}
	if a.stopping {
		return
	}
	terminal := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	if a.finished[pod.UID] || terminal {
		// Every event and every resync of a deleted pod lands here until
		// its object is gone, so a delete that failed is sent again.
		if pod.DeletionTimestamp != nil {
			go a.finalizeDeletion(pod)
		}
		return
	}
	if pod.DeletionTimestamp != nil && len(pod.Status.ContainerStatuses) == 0 {
		// Deleted before any container started: nothing to stop.
		go a.finalizeDeletion(pod)
		return
	}
	w := newPodWorker(a, pod)
	a.workers[pod.UID] = w
	a.wg.Add(1)
	go w.run()
	if pod.DeletionTimestamp != nil {
		// Seen for the first time while being deleted, for example after
		// an agent restart: stop at once what run starts.
		w.update(pod)
	}
}

// handlePodGone stops the processes of a pod whose object was removed from
// the apiserver, for example by `kubectl delete --force --grace-period=0`.
func (a *agent) handlePodGone(pod *v1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.finished, pod.UID)
	if w := a.workers[pod.UID]; w != nil {
		w.objectGone()
	} else if a.nodes[pod.Spec.NodeName] {
		go a.removePodFiles(pod)
	}
}

// workerDone removes a worker whose goroutine has returned, and records its
// pod as finished so that later events do not start it again. A pod whose
// object is gone is not recorded, because handlePodGone has already
// removed its entry and nothing would remove a new one.
func (a *agent) workerDone(w *podWorker) {
	w.mu.Lock()
	reason, pod := w.stopReason, w.pod
	w.mu.Unlock()
	a.mu.Lock()
	delete(a.workers, w.uid)
	if reason != stopObjectGone && a.podCached(pod) {
		a.finished[w.uid] = true
	}
	a.mu.Unlock()
	a.wg.Done()
}

func (a *agent) workerCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.workers)
}

// stopAllPods terminates every pod's processes, as on node shutdown, and
// waits for the workers to clean up their cgroups.
func (a *agent) stopAllPods() {
	a.mu.Lock()
	a.stopping = true
	for _, w := range a.workers {
		w.stop(stopAgentShutdown, min(containerGrace(w.currentPod()), a.cfg.shutdownGrace))
	}
	a.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(a.cfg.shutdownGrace + 15*time.Second):
		a.log.Error("pod workers did not stop in time; removing cgroups anyway", "pods", a.workerCount())
	}
}

// lockStateDir takes an exclusive lock on STATE_DIR/agent.lock, which the
// kernel releases when the agent exits, so that only one agent runs per
// state directory. The file contains the agent's PID, which
// hack/agent-up.sh and hack/agent-down.sh read when the PID file is missing.
func lockStateDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create the state directory: %w", err)
	}
	path := filepath.Join(dir, "agent.lock")
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		file.Close()
		return nil, fmt.Errorf("another node agent has locked %s (%v); stop it with hack/agent-down.sh, or give this one another -state-dir and -node-prefix", path, err)
	}
	if err := file.Truncate(0); err == nil {
		_, _ = fmt.Fprintf(file, "%d\n", os.Getpid())
	}
	return file, nil
}

// podLogDir returns the directory of a pod's container logs. Namespace and
// pod names cannot contain "/" or "_", so the name is unique.
func (a *agent) podLogDir(namespace, name string) string {
	return filepath.Join(a.cfg.podLogDir, namespace+"_"+name)
}

// quantityFlag parses a flag value as a Kubernetes resource quantity.
type quantityFlag struct{ q *resource.Quantity }

func (f quantityFlag) String() string {
	if f.q == nil {
		return ""
	}
	return f.q.String()
}

func (f quantityFlag) Set(s string) error {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return err
	}
	*f.q = q
	return nil
}

// entrypointRule maps an image name substring to a default command.
type entrypointRule struct{ substring, command string }

type entrypointRules struct {
	rules []entrypointRule
	set   bool
}

// defaultEntrypoints maps memstress images to the binaries that `make`
// builds into bin/. The worker rule comes first because "memstress" alone
// would also match the worker image.
func defaultEntrypoints() entrypointRules {
	return entrypointRules{rules: []entrypointRule{
		{"memstress-worker", "memstress-worker"},
		{"memstress-controller", "memstress-controller"},
		{"memstress", "memstress-controller"},
	}}
}

func (r *entrypointRules) String() string {
	var parts []string
	for _, rule := range r.rules {
		parts = append(parts, rule.substring+"="+rule.command)
	}
	return strings.Join(parts, ",")
}

func (r *entrypointRules) Set(s string) error {
	substring, command, ok := strings.Cut(s, "=")
	if !ok || substring == "" || command == "" {
		return fmt.Errorf("expected SUBSTRING=COMMAND, got %q", s)
	}
	if !r.set {
		r.rules, r.set = nil, true
	}
	r.rules = append(r.rules, entrypointRule{substring, command})
	return nil
}

func (r *entrypointRules) lookup(image string) string {
	for _, rule := range r.rules {
		if strings.Contains(image, rule.substring) {
			return rule.command
		}
	}
	return ""
}
