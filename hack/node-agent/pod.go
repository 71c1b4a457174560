// Pod lifecycle of the node agent, a development harness for memstress (see
// main.go). One podWorker goroutine owns each pod: it prepares the pod's
// address, token and cgroups, runs init containers in order and then the
// other containers, writes pods/status, and tears everything down when the
// containers end or the pod is deleted.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Why a pod worker stops its containers.
const (
	stopDeleted       = "deleted"        // deletionTimestamp set: finalize afterwards
	stopObjectGone    = "object gone"    // the pod object no longer exists
	stopAgentShutdown = "agent shutdown" // the agent got SIGTERM
)

// Restart back-off after a container exits, doubling up to the maximum, as
// the kubelet does (10 s to 5 min).
const (
	initialBackoff = 10 * time.Second
	maxBackoff     = 5 * time.Minute
)

type podWorker struct {
	a   *agent
	uid types.UID
	log *slog.Logger

	mu          sync.Mutex
	pod         *v1.Pod // latest object seen by the informer
	podIP       string
	startTime   metav1.Time
	cgroupPath  string
	accountDir  string // "" when the pod mounts no token
	tokenExpiry time.Time
	sandboxUp   bool
	initDone    bool
	inits       []*container
	containers  []*container
	stopReason  string
	stopGrace   time.Duration
	lostMessage string // set when a previous agent ran the pod

	stopCh    chan struct{} // closed when the containers must stop
	killNowCh chan struct{} // closed when the grace period is cut to 0
	stopOnce  sync.Once
	killOnce  sync.Once
	dirty     chan struct{}
}

func newPodWorker(a *agent, pod *v1.Pod) *podWorker {
	w := &podWorker{
		a:         a,
		uid:       pod.UID,
		log:       a.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID, "node", pod.Spec.NodeName),
		pod:       pod,
		stopCh:    make(chan struct{}),
		killNowCh: make(chan struct{}),
		dirty:     make(chan struct{}, 1),
	}
	for i := range pod.Spec.InitContainers {
		w.inits = append(w.inits, newContainer(w, &pod.Spec.InitContainers[i], true))
	}
	for i := range pod.Spec.Containers {
		w.containers = append(w.containers, newContainer(w, &pod.Spec.Containers[i], false))
	}
	// Processes die with the agent (Pdeathsig), so a pod that a previous
	// agent process started has lost its containers.
	for _, status := range pod.Status.ContainerStatuses {
		if status.State.Running != nil || status.State.Terminated != nil {
			w.lostMessage = "the node agent restarted and the container's process is gone"
		}
	}
	if t := pod.Status.StartTime; t != nil {
		w.startTime = *t
	}
	return w
}

// update stores a newer pod object and starts termination when it carries a
// deletionTimestamp. Otherwise it wakes the worker to write the status when
// the object's status differs from the desired one, which repairs a status
// write that was lost, for example during an apiserver restart. The
// informer's periodic resync calls update for every pod.
func (w *podWorker) update(pod *v1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		grace := 30 * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		w.stop(stopDeleted, grace)
		return
	}
	if w.statusStale(pod) {
		w.kick()
	}
}

func (w *podWorker) objectGone() {
	w.stop(stopObjectGone, 0)
}

// stop starts termination once. A later call with a shorter grace period
// (a forced deletion during a graceful one) ends the grace period at once.
func (w *podWorker) stop(reason string, grace time.Duration) {
	first := false
	w.stopOnce.Do(func() {
		first = true
		w.mu.Lock()
		w.stopReason, w.stopGrace = reason, grace
		w.mu.Unlock()
		close(w.stopCh)
	})
	w.mu.Lock()
	shorter := !first && grace < w.stopGrace
	if reason == stopObjectGone {
		w.stopReason = reason
	}
	w.mu.Unlock()
	if grace == 0 || shorter {
		w.killOnce.Do(func() { close(w.killNowCh) })
	}
}

func (w *podWorker) stopping() bool {
	select {
	case <-w.stopCh:
		return true
	default:
		return false
	}
}

// kick wakes the worker loop to write the pod status.
func (w *podWorker) kick() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// run owns the pod from setup to clean-up. A status write that fails is
// retried with back-off, and a newer status replaces the one that failed.
// The worker returns only once the final status of a finished pod has been
// written, or the pod is stopped.
func (w *podWorker) run() {
	defer w.a.workerDone(w)
	statusPending := true
	var statusRetry <-chan time.Time
	var backoff retryBackoff
	attempt := 0
	// writeStatus writes the status unless a retry is already scheduled,
	// and schedules one when the write fails.
	writeStatus := func() {
		if !statusPending || statusRetry != nil {
			return
		}
		attempt++
		err := w.syncStatus()
		if err == nil {
			if attempt > 1 {
				w.log.Info("pod status written after retries", "attempts", attempt)
			}
			statusPending, attempt = false, 0
			backoff.reset()
			return
		}
		delay := backoff.next()
		statusRetry = time.After(delay)
		w.log.Error("failed to update the pod status; retrying", "attempt", attempt,
			"retryIn", delay.Round(time.Millisecond).String(), "err", err)
	}

	if w.lostMessage != "" && w.pod.Spec.RestartPolicy == v1.RestartPolicyNever {
		w.log.Info("pod lost its containers in an agent restart; marking it failed")
		w.markLost()
		for writeStatus(); statusPending; writeStatus() {
			select {
			case <-statusRetry:
				statusRetry = nil
			case <-w.stopCh:
				w.finalizeIfDeleted()
				return
			}
		}
		w.finalizeIfDeleted()
		return
	}
	if !w.setUpSandbox() {
		w.tearDown()
		w.finalizeIfDeleted()
		return
	}
	writeStatus()

	allDone := make(chan struct{})
	go func() {
		w.runContainers()
		close(allDone)
	}()
	containersDone := allDone
	tokenTimer := time.NewTimer(w.tokenRefreshDelay())
	defer tokenTimer.Stop()
	tokenRefresh := tokenTimer.C
	for {
		select {
		case <-w.dirty:
			statusPending = true
		case <-statusRetry:
			statusRetry = nil
		case <-tokenRefresh:
			if err := w.writeToken(); err != nil {
				w.log.Error("failed to refresh the service-account token; retrying in 30s", "err", err)
				tokenTimer.Reset(30 * time.Second)
			} else {
				tokenTimer.Reset(w.tokenRefreshDelay())
			}
		case <-containersDone:
			// Nothing runs any more, so the pod's resources go at once,
			// even when the final status still waits for the apiserver.
			containersDone, tokenRefresh = nil, nil
			w.tearDown()
			statusPending = true
		case <-w.stopCh:
			if containersDone == nil {
				w.finalizeIfDeleted()
				return
			}
			w.terminate(allDone)
			return
		}
		writeStatus()
		if containersDone == nil && !statusPending {
			w.log.Info("pod finished", "phase", w.phase())
			return
		}
	}
}

// terminate stops every container with the grace period, then cleans up,
// and for a deleted pod removes the object as the kubelet does.
func (w *podWorker) terminate(allDone chan struct{}) {
	w.mu.Lock()
	reason, grace := w.stopReason, w.stopGrace
	w.mu.Unlock()
	w.log.Info("stopping pod", "reason", reason, "grace", grace.String())
	var wg sync.WaitGroup
	for _, c := range append(append([]*container{}, w.inits...), w.containers...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.kill(grace, w.killNowCh, "pod "+reason)
		}()
	}
	wg.Wait()
	<-allDone
	if reason == stopDeleted {
		// Best effort: the pod object is about to be deleted, and
		// finalizeDeletion retries that delete.
		if err := w.syncStatus(); err != nil {
			w.log.Error("failed to write the final status of a deleted pod", "err", err)
		}
	}
	w.tearDown()
	w.finalizeIfDeleted()
}

func (w *podWorker) finalizeIfDeleted() {
	w.mu.Lock()
	reason, pod := w.stopReason, w.pod
	w.mu.Unlock()
	switch reason {
	case stopDeleted:
		w.a.finalizeDeletion(pod)
	case stopObjectGone:
		w.a.removePodFiles(pod)
	}
}

// setUpSandbox allocates the pod address, the pod cgroup and the
// service-account files, retrying failures every 5 seconds until the pod is
// stopped. It returns false when the pod was stopped first.
func (w *podWorker) setUpSandbox() bool {
	for attempt := 0; ; attempt++ {
		err := w.trySetUpSandbox()
		if err == nil {
			return true
		}
		w.log.Error("failed to set up the pod; retrying in 5s", "attempt", attempt+1, "err", err)
		w.reportSetupError(err)
		select {
		case <-w.stopCh:
			return false
		case <-time.After(5 * time.Second):
		}
	}
}

// reportSetupError shows a setup failure in the waiting state of every
// container, where `kubectl describe pod` shows it.
func (w *podWorker) reportSetupError(err error) {
	w.mu.Lock()
	for _, c := range append(append([]*container{}, w.inits...), w.containers...) {
		if c.state.Waiting != nil {
			c.state.Waiting = &v1.ContainerStateWaiting{Reason: "ContainerCreating", Message: "pod setup failed: " + err.Error()}
		}
	}
	w.mu.Unlock()
	if err := w.syncStatus(); err != nil {
		w.log.Error("failed to update the pod status", "err", err)
	}
}

func (w *podWorker) trySetUpSandbox() error {
	pod := w.currentPod()
	ip, err := w.a.ips.allocate(w.uid, pod.Status.PodIP)
	if err != nil {
		return err
	}
	cgroupPath, err := w.a.cgroups.ensurePod(pod.Spec.NodeName, w.a.cfg.nodeMemory.Value(), w.uid, podMemoryLimit(pod))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(w.a.podLogDir(pod.Namespace, pod.Name), 0o755); err != nil {
		return fmt.Errorf("create the pod log directory: %w", err)
	}
	w.mu.Lock()
	w.podIP, w.cgroupPath = ip, cgroupPath
	if w.startTime.IsZero() {
		w.startTime = metav1.Now()
	}
	w.mu.Unlock()
	if mountsServiceAccount(pod) {
		w.mu.Lock()
		w.accountDir = filepath.Join(w.a.cfg.stateDir, string(w.uid), "serviceaccount")
		w.mu.Unlock()
		if err := w.writeToken(); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.sandboxUp = true
	w.mu.Unlock()
	w.log.Info("pod sandbox ready", "podIP", ip, "cgroup", cgroupPath)
	return nil
}

func (w *podWorker) currentPod() *v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

// podMemoryLimit returns the sum of the containers' memory limits, or 0
// when a container has none. Init containers run one at a time, so the
// largest of them counts.
func podMemoryLimit(pod *v1.Pod) int64 {
	var sum, maxInit int64
	for _, c := range pod.Spec.Containers {
		limit, ok := c.Resources.Limits[v1.ResourceMemory]
		if !ok {
			return 0
		}
		sum += limit.Value()
	}
	for _, c := range pod.Spec.InitContainers {
		limit, ok := c.Resources.Limits[v1.ResourceMemory]
		if !ok {
			return 0
		}
		maxInit = max(maxInit, limit.Value())
	}
	return max(sum, maxInit)
}

// runContainers runs the init containers one after another, then every
// other container, and returns when none will run again.
//
// NEEDSWORK: an init container with restartPolicy Always (a sidecar) is run
// like any init container, so a sidecar that never exits keeps the pod's
// other containers from starting. Sidecars would need to start, pass their
// startup probe and keep running next to the main containers.
func (w *podWorker) runContainers() {
	for _, c := range w.inits {
		if !c.runUntilDone() {
			return
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.mu.Unlock()
	w.kick()
	var wg sync.WaitGroup
	for _, c := range w.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.runUntilDone()
		}()
	}
	wg.Wait()
}

// tearDown removes the cgroups, the address and the token directory of a
// pod whose containers have all stopped.
func (w *podWorker) tearDown() {
	w.mu.Lock()
	cgroupPath, accountDir := w.cgroupPath, w.accountDir
	w.mu.Unlock()
	if cgroupPath != "" {
		w.a.cgroups.remove(cgroupPath)
	}
	if accountDir != "" {
		_ = os.RemoveAll(filepath.Dir(accountDir))
	}
	w.a.ips.release(w.uid)
}

// removePodFiles removes a pod's container logs and service-account files.
// The log directory is named after the pod, so it stays when a new pod with
// the same name already runs, as after a forced deletion.
func (a *agent) removePodFiles(pod *v1.Pod) {
	_ = os.RemoveAll(filepath.Join(a.cfg.stateDir, string(pod.UID)))
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, w := range a.workers {
		other := w.currentPod()
		if uid != pod.UID && other.Namespace == pod.Namespace && other.Name == pod.Name {
			return
		}
	}
	_ = os.RemoveAll(a.podLogDir(pod.Namespace, pod.Name))
}

// markLost records every container of a pod from a previous agent run as
// terminated, so the pod becomes Failed.
func (w *podWorker) markLost() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.initDone = true
	for _, c := range append(append([]*container{}, w.inits...), w.containers...) {
		c.state = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode: 137, Reason: "Error", Message: w.lostMessage,
			FinishedAt: metav1.Now(),
		}}
		c.done = true
	}
}

// --- status -----------------------------------------------------------

// phase computes the pod phase from the container states, under the
// kubelet's rules. The caller must not hold w.mu.
func (w *podWorker) phase() v1.PodPhase {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.phaseLocked()
}

func (w *podWorker) phaseLocked() v1.PodPhase {
	for _, c := range w.inits {
		if c.done && c.exitCode() != 0 {
			return v1.PodFailed
		}
	}
	if !w.initDone {
		return v1.PodPending
	}
	running, waiting, failed := 0, 0, 0
	for _, c := range w.containers {
		switch {
		case c.state.Running != nil:
			running++
		case c.done:
			if c.exitCode() != 0 {
				failed++
			}
		default:
			waiting++
		}
	}
	switch {
	case running > 0:
		return v1.PodRunning
	case waiting > 0:
		for _, c := range w.containers {
			if c.restartCount > 0 || c.state.Terminated != nil {
				return v1.PodRunning // restarting
			}
		}
		return v1.PodPending
	case failed > 0:
		return v1.PodFailed
	default:
		return v1.PodSucceeded
	}
}

// syncStatus writes the pod status with a JSON merge patch on pods/status.
// The patch carries metadata.uid, so it fails with a conflict on a new pod
// with the same name. It returns nil when the pod is gone or replaced, or
// when the apiserver rejects the status as invalid, because no retry can
// write that status. It returns other errors, such as a refused connection
// during an apiserver restart, for the caller to retry.
func (w *podWorker) syncStatus() error {
	w.mu.Lock()
	pod := w.pod
	status := w.buildStatusLocked(pod)
	w.mu.Unlock()
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   status,
	})
	if err != nil {
		w.log.Error("failed to encode the pod status", "err", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = w.a.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch,
		metav1.PatchOptions{}, "status")
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		// The informer's next resync writes the status again if it still
		// differs, which bounds these attempts to one per resync period.
		w.log.Error("apiserver rejected the pod status; not retrying", "err", err)
		return nil
	default:
		return err
	}
}

func (w *podWorker) buildStatusLocked(pod *v1.Pod) v1.PodStatus {
	status := *pod.Status.DeepCopy()
	status.Phase = w.phaseLocked()
	status.ObservedGeneration = pod.Generation
	status.HostIP = "127.0.0.1"
	status.HostIPs = []v1.HostIP{{IP: "127.0.0.1"}}
	if w.podIP != "" {
		status.PodIP = w.podIP
		status.PodIPs = []v1.PodIP{{IP: w.podIP}}
	}
	if !w.startTime.IsZero() {
		status.StartTime = &w.startTime
	}
	status.InitContainerStatuses = nil
	for _, c := range w.inits {
		status.InitContainerStatuses = append(status.InitContainerStatuses, c.statusLocked())
	}
	status.ContainerStatuses = nil
	for _, c := range w.containers {
		status.ContainerStatuses = append(status.ContainerStatuses, c.statusLocked())
	}

	terminal := status.Phase == v1.PodSucceeded || status.Phase == v1.PodFailed
	var notReady []string
	for _, c := range w.containers {
		if !c.ready {
			notReady = append(notReady, c.spec.Name)
		}
	}
	containersReady := len(notReady) == 0 && w.initDone && !terminal
	podReady := containersReady
	var gateMessage string
	for _, gate := range pod.Spec.ReadinessGates {
		if !conditionTrue(pod.Status.Conditions, gate.ConditionType) {
			podReady = false
			gateMessage = fmt.Sprintf("readiness gate %s is not True", gate.ConditionType)
		}
	}
	notReadyReason, notReadyMessage := "ContainersNotReady",
		fmt.Sprintf("containers not ready: [%s]", strings.Join(notReady, " "))
	if terminal {
		notReadyReason, notReadyMessage = "PodCompleted", ""
	}
	initMessage := ""
	if !w.initDone {
		initMessage = "init containers have not completed"
	}
	readyReason, readyMessage := notReadyReason, notReadyMessage
	if containersReady && !podReady {
		readyReason, readyMessage = "ReadinessGatesNotReady", gateMessage
	}
	set := func(kind v1.PodConditionType, ok bool, reason, message string) {
		setCondition(&status.Conditions, pod.Generation, kind, ok, reason, message)
	}
	set(v1.PodReadyToStartContainers, w.sandboxUp, "", "")
	set(v1.PodInitialized, w.initDone, reasonUnless(w.initDone, "ContainersNotInitialized"), initMessage)
	set(v1.ContainersReady, containersReady, reasonUnless(containersReady, notReadyReason), messageUnless(containersReady, notReadyMessage))
	set(v1.PodReady, podReady, reasonUnless(podReady, readyReason), messageUnless(podReady, readyMessage))
	return status
}

func reasonUnless(ok bool, reason string) string {
	if ok {
		return ""
	}
	return reason
}

func messageUnless(ok bool, message string) string {
	return reasonUnless(ok, message)
}

func conditionTrue(conditions []v1.PodCondition, kind v1.PodConditionType) bool {
	for _, c := range conditions {
		if c.Type == kind {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// setCondition replaces or appends a condition, keeping its transition time
// while its status stays the same.
func setCondition(conditions *[]v1.PodCondition, generation int64, kind v1.PodConditionType, ok bool, reason, message string) {
	value := v1.ConditionFalse
	if ok {
		value = v1.ConditionTrue
	}
	next := v1.PodCondition{Type: kind, Status: value, Reason: reason, Message: message,
		ObservedGeneration: generation, LastTransitionTime: metav1.Now()}
	for i, c := range *conditions {
		if c.Type == kind {
			if c.Status == value {
				next.LastTransitionTime = c.LastTransitionTime
			}
			(*conditions)[i] = next
			return
		}
	}
	*conditions = append(*conditions, next)
}

// --- containers --------------------------------------------------------

// container is one container of a pod and its current process, if any.
// Fields below spec are guarded by the pod worker's mu.
type container struct {
	w      *podWorker
	spec   *v1.Container
	isInit bool

	state        v1.ContainerState
	lastState    v1.ContainerState
	restartCount int32
	ready        bool
	started      bool
	done         bool // ended and will not restart
	pid          int
	executable   string
	exited       chan struct{} // closed when the current process has exited
	killReason   string
}

func newContainer(w *podWorker, spec *v1.Container, isInit bool) *container {
	return &container{w: w, spec: spec, isInit: isInit, state: v1.ContainerState{
		Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"},
	}}
}

func (c *container) exitCode() int32 {
	if c.state.Terminated != nil {
		return c.state.Terminated.ExitCode
	}
	return 0
}

func (c *container) statusLocked() v1.ContainerStatus {
	started := c.started && c.state.Running != nil
	status := v1.ContainerStatus{
		Name:                 c.spec.Name,
		Image:                c.spec.Image,
		ImageID:              "memstress-local://" + c.spec.Image,
		State:                c.state,
		LastTerminationState: c.lastState,
		Ready:                c.ready,
		RestartCount:         c.restartCount,
		Started:              &started,
	}
	if c.pid != 0 {
		status.ContainerID = fmt.Sprintf("memstress://%d", c.pid)
	}
	if !c.w.initDone && !c.isInit && c.state.Waiting != nil {
		status.State.Waiting = &v1.ContainerStateWaiting{Reason: "PodInitializing"}
	}
	return status
}

// restartWanted applies the pod's restartPolicy to an exit code. Init
// containers restart on failure unless the policy is Never.
func (c *container) restartWanted(exitCode int32) bool {
	policy := c.w.pod.Spec.RestartPolicy
	if c.isInit {
		return exitCode != 0 && policy != v1.RestartPolicyNever
	}
	switch policy {
	case v1.RestartPolicyAlways:
		return true
	case v1.RestartPolicyOnFailure:
		return exitCode != 0
	default:
		return false
	}
}

// runUntilDone starts the container and restarts it under restartPolicy.
// It returns true when the container completed successfully.
func (c *container) runUntilDone() bool {
	backoff := initialBackoff
	for {
		if c.w.stopping() {
			c.markDone()
			return false
		}
		terminated := c.runOnce()
		w := c.w
		w.mu.Lock()
		restart := c.restartWanted(terminated.ExitCode) && !w.stopping()
		if !restart {
			c.done = true
		}
		w.mu.Unlock()
		w.kick()
		if !restart {
			return terminated.ExitCode == 0
		}
		c.w.log.Info("container will restart", "container", c.spec.Name, "exitCode", terminated.ExitCode, "backoff", backoff.String())
		w.mu.Lock()
		c.lastState = c.state
		c.state = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container %s", backoff, c.spec.Name),
		}}
		w.mu.Unlock()
		w.kick()
		select {
		case <-w.stopCh:
			c.markDone()
			return false
		case <-time.After(backoff):
		}
		w.mu.Lock()
		c.restartCount++
		w.mu.Unlock()
		backoff = min(2*backoff, maxBackoff)
	}
}

// markDone records that a container that never ran, or waits to restart,
// will not run again.
func (c *container) markDone() {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.state.Terminated == nil {
		c.state = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode: 137, Reason: "ContainerStatusUnknown",
			Message: "the container could not be started or restarted before the pod stopped",
		}}
	}
	c.done = true
}

// runOnce starts one process for the container, runs its probes, waits for
// it to exit and returns its terminated state.
func (c *container) runOnce() v1.ContainerStateTerminated {
	w := c.w
	cmd, cgroupPath, err := c.prepare()
	var startedAt metav1.Time
	if err == nil {
		err = cmd.Start()
		startedAt = metav1.Now()
	}
	if cmd != nil {
		// The child has its own copies of the log file descriptors.
		if f, ok := cmd.Stdout.(*os.File); ok {
			f.Close()
		}
	}
	if err != nil {
		w.log.Error("failed to start container", "container", c.spec.Name, "err", err)
		terminated := v1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError",
			Message: err.Error(), StartedAt: metav1.Now(), FinishedAt: metav1.Now()}
		w.mu.Lock()
		c.state = v1.ContainerState{Terminated: &terminated}
		w.mu.Unlock()
		return terminated
	}
	oomBefore := w.a.cgroups.oomKills(cgroupPath)
	exited := make(chan struct{})
	w.mu.Lock()
	c.pid, c.exited, c.killReason = cmd.Process.Pid, exited, ""
	c.state = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: startedAt}}
	c.started = c.spec.StartupProbe == nil
	c.ready = c.spec.ReadinessProbe == nil && c.started && !c.isInit
	w.mu.Unlock()
	w.log.Info("container started", "container", c.spec.Name, "pid", cmd.Process.Pid, "command", cmd.Args[4:])
	w.kick()

	probeCtx, stopProbes := context.WithCancel(context.Background())
	if !c.isInit {
		go c.runProbes(probeCtx)
	}
	waitErr := cmd.Wait()
	stopProbes()
	close(exited)
	terminated := c.terminatedState(cmd, waitErr, startedAt, w.a.cgroups.oomKills(cgroupPath) > oomBefore)
	// Children of the container process may outlive it; a container ends
	// with all of its processes, as in a container runtime.
	w.a.cgroups.killAll(cgroupPath)
	w.mu.Lock()
	c.state = v1.ContainerState{Terminated: &terminated}
	c.ready = false
	w.mu.Unlock()
	w.log.Info("container exited", "container", c.spec.Name, "pid", cmd.Process.Pid,
		"exitCode", terminated.ExitCode, "reason", terminated.Reason)
	return terminated
}

// terminatedState turns a process exit into a container state: 128 plus
// the signal number for a signal death, OOMKilled when the kernel OOM
// killer killed the process in the container's cgroup.
func (c *container) terminatedState(cmd *exec.Cmd, waitErr error, startedAt metav1.Time, oomKilled bool) v1.ContainerStateTerminated {
	terminated := v1.ContainerStateTerminated{StartedAt: startedAt, FinishedAt: metav1.Now(),
		ContainerID: fmt.Sprintf("memstress://%d", cmd.Process.Pid)}
	status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		terminated.ExitCode, terminated.Message = 128, fmt.Sprintf("unknown exit status: %v", waitErr)
	case status.Signaled():
		terminated.ExitCode = 128 + int32(status.Signal())
		terminated.Signal = int32(status.Signal())
	default:
		terminated.ExitCode = int32(status.ExitStatus())
	}
	switch {
	case oomKilled && terminated.ExitCode == 137:
		terminated.Reason = "OOMKilled"
	case terminated.ExitCode == 0:
		terminated.Reason = "Completed"
	default:
		terminated.Reason = "Error"
	}
	c.w.mu.Lock()
	if c.killReason != "" {
		terminated.Message = c.killReason
	}
	c.w.mu.Unlock()
	return terminated
}

// prepare builds the command that starts the container: the agent itself in
// container-init mode, in a new mount namespace and process group, with
// stdout and stderr appended to the container log.
func (c *container) prepare() (*exec.Cmd, string, error) {
	w := c.w
	pod := w.currentPod()
	w.mu.Lock()
	podCgroup, accountDir, podIP := w.cgroupPath, w.accountDir, w.podIP
	w.mu.Unlock()

	env, err := w.a.containerEnv(pod, c.spec, podIP)
	if err != nil {
		return nil, "", err
	}
	executable, argv, err := w.a.resolveCommand(c.spec, env)
	if err != nil {
		return nil, "", err
	}
	var limit int64
	if q, ok := c.spec.Resources.Limits[v1.ResourceMemory]; ok {
		limit = q.Value()
	}
	cgroupPath, err := w.a.cgroups.ensureContainer(podCgroup, c.spec.Name, limit)
	if err != nil {
		return nil, "", err
	}
	logPath := filepath.Join(w.a.podLogDir(pod.Namespace, pod.Name), c.spec.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, "", fmt.Errorf("open the container log: %w", err)
	}
	args := append([]string{"node-agent", containerInitArg, w.a.cgroups.procsFile(cgroupPath), accountDir, executable}, argv...)
	cmd := &exec.Cmd{
		Path:   w.a.selfExe,
		Args:   args,
		Env:    envList(env),
		Dir:    c.spec.WorkingDir,
		Stdout: logFile,
		Stderr: logFile,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:      true,
			Unshareflags: syscall.CLONE_NEWNS,
			// A container must not outlive the agent: nothing would
			// report on it or stop it.
			// NEEDSWORK: Linux sends this signal when the thread that
			// forked exits, not the agent process, and reaches only the
			// container's first process, not its children. The Go
			// runtime does not end threads in this program, and the
			// children are killed through the cgroup on a clean stop,
			// but after a SIGKILL of the agent they can remain.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	c.executable = executable
	return cmd, cgroupPath, nil
}

// kill stops the container's process: SIGTERM to its process group, then
// SIGKILL to every process in its cgroup once the grace period ends or
// killNow is closed. It returns when the process has exited.
func (c *container) kill(grace time.Duration, killNow <-chan struct{}, reason string) {
	w := c.w
	w.mu.Lock()
	pid, exited, running := c.pid, c.exited, c.state.Running != nil
	if running {
		c.killReason = "stopped: " + reason
	}
	w.mu.Unlock()
	if !running || exited == nil {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-exited:
		return
	case <-timer.C:
	case <-killNow:
	}
	w.log.Info("grace period over; sending SIGKILL", "container", c.spec.Name, "pid", pid)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	w.mu.Lock()
	cgroupPath := filepath.Join(w.cgroupPath, c.spec.Name)
	w.mu.Unlock()
	w.a.cgroups.killAll(cgroupPath)
	<-exited
}

// containerGrace returns the pod's terminationGracePeriodSeconds, default 30.
func containerGrace(pod *v1.Pod) time.Duration {
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return 30 * time.Second
}
