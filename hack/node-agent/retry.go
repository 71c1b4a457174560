// Retries of the node agent's API writes, a development harness for memstress
// (see main.go). A pod status patch or the final delete of a pod object can
// fail while kube-apiserver restarts. The pod workers keep the desired state
// and write it again with exponential back-off. The pod informer's periodic
// resync also compares each pod's status in the API with the desired one.
// So every pod converges once the apiserver is back.
package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Back-off of failed API writes: 500 ms, doubling with up to 20 % jitter,
// to at most 20 s. The maximum bounds how long a pod's state lags behind
// after the apiserver comes back.
const (
	initialRetryDelay = 500 * time.Millisecond
	maxRetryDelay     = 20 * time.Second
)

// podResyncPeriod is the interval at which the pod informer replays every
// cached pod to the agent. A replay costs no API request. It only triggers
// a write when a pod's status in the cache differs from the desired status,
// or when a deleted pod's object still has to be removed.
const podResyncPeriod = 30 * time.Second

// retryBackoff computes the delays between attempts of one failing write.
type retryBackoff struct {
	delay time.Duration
}

// next returns the delay before the next attempt and doubles the delay that
// follows it.
func (b *retryBackoff) next() time.Duration {
	if b.delay == 0 {
		b.delay = initialRetryDelay
	}
	delay := wait.Jitter(b.delay, 0.2)
	b.delay = min(2*b.delay, maxRetryDelay)
	return delay
}

func (b *retryBackoff) reset() {
	b.delay = 0
}

// finalizeDeletion removes a deleted pod's object once nothing of it runs:
// a delete with grace period 0 and a UID precondition, as the kubelet
// sends. Its log directory goes with it. A failed delete is retried with
// back-off until it succeeds, the object leaves the informer cache, or the
// agent stops. A call for a pod whose deletion is already being retried
// returns at once.
func (a *agent) finalizeDeletion(pod *v1.Pod) {
	a.mu.Lock()
	if a.finalizing[pod.UID] {
		a.mu.Unlock()
		return
	}
	a.finalizing[pod.UID] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.finalizing, pod.UID)
		a.mu.Unlock()
	}()

	a.removePodFiles(pod)
	name := pod.Namespace + "/" + pod.Name
	var backoff retryBackoff
	for attempt := 1; ; attempt++ {
		err := a.deletePodObject(pod)
		if err == nil {
			return
		}
		if !a.podCached(pod) {
			a.log.Info("pod object gone from the cache; no longer retrying its delete", "pod", name, "uid", pod.UID)
			return
		}
		delay := backoff.next()
		a.log.Error("failed to delete pod; retrying", "pod", name, "uid", pod.UID,
			"attempt", attempt, "retryIn", delay.Round(time.Millisecond).String(), "err", err)
		select {
		case <-a.ctx.Done():
			a.log.Error("agent stopping; pod object not deleted", "pod", name, "uid", pod.UID)
			return
		case <-time.After(delay):
		}
	}
}

// deletePodObject sends the final delete of a pod. NotFound and Conflict
// count as success: the object is gone already, or a new pod with the same
// name replaced it.
func (a *agent) deletePodObject(pod *v1.Pod) error {
	zero := int64(0)
	options := metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, options)
	switch {
	case err == nil:
		a.log.Info("pod deleted", "pod", pod.Namespace+"/"+pod.Name, "uid", pod.UID)
		return nil
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return nil
	default:
		return err
	}
}

// podCached reports whether the informer cache still contains the pod object
// with this UID.
func (a *agent) podCached(pod *v1.Pod) bool {
	obj, exists, err := a.podStore.GetByKey(pod.Namespace + "/" + pod.Name)
	if err != nil || !exists {
		return false
	}
	cached, ok := obj.(*v1.Pod)
	return ok && cached.UID == pod.UID
}

// statusSummary renders the fields of a pod status that the agent owns and
// that clients act on: phase, pod IP, the four pod conditions the agent
// sets, and per container its state, readiness and restart count. Two
// statuses with the same summary need no write.
//
// NEEDSWORK: lastState, messages and timestamps are not compared, so when a
// write that changed only those fields fails, only the worker's retries
// repair it, not the resync. Comparing them would need the apiserver's
// normalization of times (seconds precision) to be mirrored here.
func statusSummary(status *v1.PodStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s ip=%s", status.Phase, status.PodIP)
	for _, kind := range []v1.PodConditionType{v1.PodReadyToStartContainers, v1.PodInitialized, v1.ContainersReady, v1.PodReady} {
		value := v1.ConditionUnknown
		for _, c := range status.Conditions {
			if c.Type == kind {
				value = c.Status
			}
		}
		fmt.Fprintf(&b, " %s=%s", kind, value)
	}
	for _, list := range [][]v1.ContainerStatus{status.InitContainerStatuses, status.ContainerStatuses} {
		for _, c := range list {
			fmt.Fprintf(&b, " %s:%s,ready=%t,restarts=%d", c.Name, containerStateSummary(c.State), c.Ready, c.RestartCount)
		}
	}
	return b.String()
}

func containerStateSummary(state v1.ContainerState) string {
	switch {
	case state.Running != nil:
		return "running"
	case state.Terminated != nil:
		return fmt.Sprintf("terminated(%d,%s)", state.Terminated.ExitCode, state.Terminated.Reason)
	case state.Waiting != nil:
		return "waiting(" + state.Waiting.Reason + ")"
	default:
		return "none"
	}
}

// statusStale reports whether the status of pod, an object from the
// informer, differs from the status the worker would write.
func (w *podWorker) statusStale(pod *v1.Pod) bool {
	w.mu.Lock()
	desired := w.buildStatusLocked(pod)
	w.mu.Unlock()
	return statusSummary(&desired) != statusSummary(&pod.Status)
}
