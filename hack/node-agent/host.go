// Host resources of the node agent, a development harness for memstress (see
// main.go): memory cgroups, loopback pod addresses, and the wrapper that
// moves a container process into its cgroup and mount namespace before it
// executes the container's command.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// cgroupManager creates memory cgroups under one parent named "memstress":
// PARENT/<node>/<pod-uid>/<container>. A node's cgroup is limited to its
// memory capacity, a pod's to the sum of its containers' limits when every
// container has one, and a container's to its limits.memory.
type cgroupManager struct {
	version int    // 1 or 2
	parent  string // for example /sys/fs/cgroup/memory/memstress
	log     *slog.Logger
}

func newCgroupManager(log *slog.Logger) (*cgroupManager, error) {
	m := &cgroupManager{log: log}
	controllers, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	switch {
	case err == nil && strings.Contains(" "+strings.TrimSpace(string(controllers))+" ", " memory "):
		// NEEDSWORK: this cgroup v2 path has never run, because the machine
		// the agent was written on has its memory controller on v1. Run
		// test/agent/run.sh on a v2 host before relying on it.
		m.version, m.parent = 2, "/sys/fs/cgroup/memstress"
		if err := enableMemoryController("/sys/fs/cgroup"); err != nil {
			return nil, err
		}
	case dirExists("/sys/fs/cgroup/memory"):
		m.version, m.parent = 1, "/sys/fs/cgroup/memory/memstress"
	default:
		return nil, errors.New("no memory cgroup controller: /sys/fs/cgroup/cgroup.controllers lacks memory and /sys/fs/cgroup/memory does not exist")
	}
	if err := m.mkdir(m.parent); err != nil {
		return nil, err
	}
	return m, nil
}

func dirExists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

// enableMemoryController lets the children of a v2 cgroup use memory.
func enableMemoryController(dir string) error {
	path := filepath.Join(dir, "cgroup.subtree_control")
	current, err := os.ReadFile(path)
	if err == nil && strings.Contains(" "+string(current)+" ", " memory") {
		return nil
	}
	if err := os.WriteFile(path, []byte("+memory"), 0o644); err != nil {
		return fmt.Errorf("enable the memory controller in %s: %w", path, err)
	}
	return nil
}

// mkdir creates one cgroup unless it exists.
func (m *cgroupManager) mkdir(path string) error {
	if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return nil
}

// setLimit writes a memory limit in bytes and disables swap for the cgroup.
func (m *cgroupManager) setLimit(path string, limit int64) error {
	value := strconv.FormatInt(limit, 10)
	if m.version == 2 {
		if err := os.WriteFile(filepath.Join(path, "memory.max"), []byte(value), 0o644); err != nil {
			return fmt.Errorf("set memory.max of %s: %w", path, err)
		}
		swap := filepath.Join(path, "memory.swap.max")
		if _, err := os.Stat(swap); err == nil {
			_ = os.WriteFile(swap, []byte("0"), 0o644)
		}
		return nil
	}
	if err := os.WriteFile(filepath.Join(path, "memory.limit_in_bytes"), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set memory.limit_in_bytes of %s: %w", path, err)
	}
	// memsw counts memory plus swap and must not be below the memory limit,
	// so it is written after it. The file exists only with swap accounting.
	memsw := filepath.Join(path, "memory.memsw.limit_in_bytes")
	if _, err := os.Stat(memsw); err == nil {
		if err := os.WriteFile(memsw, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set memory.memsw.limit_in_bytes of %s: %w", path, err)
		}
	}
	return nil
}

func (m *cgroupManager) ensureNode(node string, limit int64) error {
	path := filepath.Join(m.parent, node)
	if m.version == 2 {
		if err := enableMemoryController(m.parent); err != nil {
			return err
		}
	}
	if err := m.mkdir(path); err != nil {
		return err
	}
	return m.setLimit(path, limit)
}

// removeStalePods removes the pod cgroups under a node, with any process
// left in them. Only an agent that was killed before it cleaned up leaves
// them, and those processes descend from containers it started.
func (m *cgroupManager) removeStalePods(node string) {
	entries, _ := os.ReadDir(filepath.Join(m.parent, node))
	for _, entry := range entries {
		if entry.IsDir() {
			path := filepath.Join(m.parent, node, entry.Name())
			m.log.Info("removing a pod cgroup left by a previous agent", "path", path)
			m.remove(path)
		}
	}
}

// ensurePod creates the pod's cgroup. A limit of 0 leaves it unlimited. The
// parent and node cgroups are created again, with nodeLimit, when something
// removed them while the agent runs.
func (m *cgroupManager) ensurePod(node string, nodeLimit int64, uid types.UID, limit int64) (string, error) {
	nodePath := filepath.Join(m.parent, node)
	if !dirExists(nodePath) {
		m.log.Info("node cgroup missing; creating it again", "path", nodePath)
		if err := m.mkdir(m.parent); err != nil {
			return "", err
		}
		if err := m.ensureNode(node, nodeLimit); err != nil {
			return "", err
		}
	}
	path := filepath.Join(nodePath, string(uid))
	if m.version == 2 {
		if err := enableMemoryController(nodePath); err != nil {
			return "", err
		}
	}
	if err := m.mkdir(path); err != nil {
		return "", err
	}
	if m.version == 2 {
		if err := enableMemoryController(path); err != nil {
			return "", err
		}
	}
	if limit > 0 {
		return path, m.setLimit(path, limit)
	}
	return path, nil
}

// ensureContainer creates a container's cgroup inside its pod's cgroup. A
// limit of 0 leaves it unlimited.
func (m *cgroupManager) ensureContainer(podPath, container string, limit int64) (string, error) {
	path := filepath.Join(podPath, container)
	if err := m.mkdir(path); err != nil {
		return "", err
	}
	if limit > 0 {
		return path, m.setLimit(path, limit)
	}
	return path, nil
}

func (m *cgroupManager) procsFile(path string) string {
	return filepath.Join(path, "cgroup.procs")
}

// oomKills returns the number of processes the kernel OOM killer has killed
// in the cgroup, from memory.oom_control (v1, Linux 4.13 and later) or
// memory.events (v2). It returns 0 when the counter cannot be read.
func (m *cgroupManager) oomKills(path string) int64 {
	file := "memory.oom_control"
	if m.version == 2 {
		file = "memory.events"
	}
	data, err := os.ReadFile(filepath.Join(path, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "oom_kill" {
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			return n
		}
	}
	return 0
}

// pids lists the processes in a cgroup.
func (m *cgroupManager) pids(path string) []int {
	data, err := os.ReadFile(m.procsFile(path))
	if err != nil {
		return nil
	}
	var pids []int
	for _, field := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(field); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killAll sends SIGKILL to every process in a container's cgroup. Each of
// them descends from a process the agent started there.
func (m *cgroupManager) killAll(path string) {
	for _, pid := range m.pids(path) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// remove kills what is left in a cgroup tree and removes it, children
// first. A cgroup can only be removed once its processes have been reaped,
// so each rmdir is retried for up to 5 seconds.
func (m *cgroupManager) remove(path string) {
	entries, _ := os.ReadDir(path)
	for _, entry := range entries {
		if entry.IsDir() {
			m.remove(filepath.Join(path, entry.Name()))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.killAll(path)
		err := os.Remove(path)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			m.log.Error("failed to remove cgroup", "path", path, "err", err, "pids", m.pids(path))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeNodes removes the cgroups of the agent's nodes, and the parent when
// no other user (such as test/cgroup/run.sh) has a cgroup in it.
func (m *cgroupManager) removeNodes(nodes map[string]bool) {
	for node := range nodes {
		m.remove(filepath.Join(m.parent, node))
	}
	_ = os.Remove(m.parent)
}

// ipPool hands out loopback addresses to pods. Allocation goes round-robin,
// so a released address is reused as late as possible.
type ipPool struct {
	mu    sync.Mutex
	base  [3]byte
	first int
	last  int
	next  int
	used  map[int]types.UID
}

func newIPPool(spec string) (*ipPool, error) {
	firstText, lastText, ok := strings.Cut(spec, "-")
	first, last := net.ParseIP(firstText).To4(), net.ParseIP(lastText).To4()
	if !ok || first == nil || last == nil || first[0] != 127 ||
		[3]byte(first[:3]) != [3]byte(last[:3]) || first[3] > last[3] || first[3] == 0 || last[3] == 255 {
		return nil, fmt.Errorf("invalid -pod-ip-range %q: expected FIRST-LAST within one 127.x.y.0/24, such as 127.0.0.10-127.0.0.250", spec)
	}
	return &ipPool{base: [3]byte(first[:3]), first: int(first[3]), last: int(last[3]),
		next: int(first[3]), used: map[int]types.UID{}}, nil
}

func (p *ipPool) format(host int) string {
	return fmt.Sprintf("%d.%d.%d.%d", p.base[0], p.base[1], p.base[2], host)
}

// allocate returns the pod's address. It keeps the address in preferred
// (the pod's old status.podIP) when that one is free.
func (p *ipPool) allocate(uid types.UID, preferred string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for host, owner := range p.used {
		if owner == uid {
			return p.format(host), nil
		}
	}
	if ip := net.ParseIP(preferred).To4(); ip != nil && [3]byte(ip[:3]) == p.base {
		host := int(ip[3])
		if _, taken := p.used[host]; !taken && host >= p.first && host <= p.last {
			p.used[host] = uid
			return preferred, nil
		}
	}
	size := p.last - p.first + 1
	for i := 0; i < size; i++ {
		host := p.first + (p.next-p.first+i)%size
		if _, taken := p.used[host]; !taken {
			p.used[host] = uid
			p.next = host + 1
			return p.format(host), nil
		}
	}
	return "", fmt.Errorf("all %d pod addresses are in use; widen -pod-ip-range", size)
}

func (p *ipPool) release(uid types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for host, owner := range p.used {
		if owner == uid {
			delete(p.used, host)
		}
	}
}

// containerInitArg is the hidden first argument that runs containerInit.
const containerInitArg = "container-init"

// serviceAccountPath is the directory of the token, CA and namespace files in a pod.
const serviceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// containerInit runs in the child process that the agent starts for a
// container, already in a private mount namespace (SysProcAttr.Unshareflags
// with CLONE_NEWNS, which also makes every mount private). Arguments:
// CGROUP_PROCS_FILE SERVICE_ACCOUNT_DIR|"" EXECUTABLE ARGV0 ARGS...
//
// It writes its PID to the cgroup, bind-mounts the pod's service-account
// directory read-only at serviceAccountPath, and execs the command, which
// keeps the PID and the cgroup. Memory charged before the move stays with
// the agent's cgroup. Errors go to the container log with exit code 128,
// the code container runtimes use for a failed start.
func containerInit(args []string) {
	fail := func(format string, values ...any) {
		fmt.Fprintf(os.Stderr, "node-agent container-init: "+format+"\n", values...)
		os.Exit(128)
	}
	if len(args) < 4 {
		fail("expected CGROUP_PROCS_FILE SERVICE_ACCOUNT_DIR EXECUTABLE ARGV0 [ARGS...], got %q", args)
	}
	procsFile, accountDir, executable, argv := args[0], args[1], args[2], args[3:]
	if err := os.WriteFile(procsFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fail("join cgroup %s: %v", procsFile, err)
	}
	if accountDir != "" {
		// The mount point is created on the host file system: an empty
		// directory, left in place.
		if err := os.MkdirAll(serviceAccountPath, 0o755); err != nil {
			fail("create %s: %v", serviceAccountPath, err)
		}
		if err := syscall.Mount(accountDir, serviceAccountPath, "", syscall.MS_BIND, ""); err != nil {
			fail("bind-mount %s at %s: %v", accountDir, serviceAccountPath, err)
		}
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY)
		if err := syscall.Mount("", serviceAccountPath, "", flags, ""); err != nil {
			fail("make %s read-only: %v", serviceAccountPath, err)
		}
	}
	err := syscall.Exec(executable, argv, os.Environ())
	fail("exec %s: %v", executable, err)
}
