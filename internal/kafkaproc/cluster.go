package kafkaproc

import (
	"archive/zip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/kavari-go/kavari/internal/netfault"
)

// Options configures [Start].
type Options struct {
	// Nodes is the number of KRaft nodes, 1 or 3 (0 means 1). Every node is
	// a combined broker+controller and a voter of the metadata quorum.
	Nodes int

	// Dir is the working directory: node i keeps its configuration, data and
	// logs in Dir/node-<i+1> (server.properties, log4j2.xml, data/,
	// server.log, stdout.log, format.log). Those node directories are wiped
	// by Start. When Dir is empty a temporary directory is created and
	// removed again by [Cluster.Stop].
	Dir string

	// LibDir is the directory of jars returned by [Fetch]. When empty it is
	// taken from the KAVARI_KAFKA_LIB environment variable ([EnvLib]).
	LibDir string

	// Heap is the maximum JVM heap per node (-Xmx); default "512m".
	Heap string

	// JVMOpts are extra JVM options appended after the defaults.
	JVMOpts []string

	// ServerProps overrides or adds server.properties entries on every node.
	ServerProps map[string]string

	// LogLevel is the root log4j2 level written to server.log; default
	// "INFO".
	LogLevel string

	// StartTimeout bounds how long Start and Restart wait for brokers to
	// answer; default 120s.
	StartTimeout time.Duration

	// StopTimeout is how long Stop waits after SIGTERM before it sends
	// SIGKILL; default 10s.
	StopTimeout time.Duration

	// FullJIT runs the JVMs with the full tiered JIT (C1+C2, the JVM
	// default). By default nodes use -XX:TieredStopAtLevel=1 (C1 only),
	// which brings a 3-node cluster up about a third faster on 2 cores at
	// the cost of peak throughput; set FullJIT for benchmarks.
	FullJIT bool

	// SkipWarmup leaves the group coordinator cold. By default Start waits
	// until every partition of __consumer_offsets has an active coordinator,
	// so the first consumer group join does not fail with "Group
	// Coordinator Not Available" (which kafka-go's ConsumerGroup.Next
	// surfaces and then retries only after JoinGroupBackoff, 5s by default).
	SkipWarmup bool

	// Security, when set, adds TLS and SASL listeners to every node; see
	// [Security] and [Cluster.Security]. Start then takes a few seconds
	// longer (keytool makes a CA and the brokers' certificate).
	Security *Security

	// Proxy gives every node a second client listener that is reached
	// through a fault proxy ([netfault.Proxy]) and advertised at the
	// proxy's address, so clients that bootstrap from
	// [Cluster.ProxiedBrokers] talk to the cluster only through the
	// proxies, which [Cluster.Proxy] can cut, reset or slow. Brokers talk
	// to each other, and [Cluster.Brokers] reaches them, directly.
	Proxy bool

	// Logf, when set, receives progress messages.
	Logf func(format string, args ...any)
}

// Cluster is a running set of Kafka nodes started by [Start]. Its methods
// are safe for concurrent use.
type Cluster struct {
	opts       Options
	dir        string
	removeDir  bool
	libDir     string
	version    string
	clusterID  string
	java       string
	mu         sync.Mutex
	nodes      []*node
	stopOnce   sync.Once
	stopErr    error
	stoppedAll bool
	sec        *secState // nil unless Options.Security is set
}

// node is one Kafka process (node.id = index+1).
type node struct {
	id             int
	dir            string
	brokerPort     int
	controllerPort int
	proc           *process // nil when not running

	// The secured listeners' ports, 0 without Options.Security.
	sslPort, saslPort, saslSSLPort int

	// The proxied listener's port and its proxy (Options.Proxy).
	externalPort int
	proxy        *netfault.Proxy
}

func (n *node) brokerAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.brokerPort)) }

// process is a started child running in its own process group.
type process struct {
	cmd     *exec.Cmd
	pid     int
	done    chan struct{} // closed when the process has exited
	waitErr error
	logs    []*os.File
}

// Start launches a fresh KRaft cluster as described by opts and waits until
// every broker answers metadata requests, lists all nodes as live brokers
// and reports a controller. On failure everything that was started is
// killed and the error includes the tail of the failing node's log.
//
// The processes are not tied to ctx (it bounds only the start-up); call
// [Cluster.Stop] when done.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Nodes != 1 && opts.Nodes != 3 {
		return nil, fmt.Errorf("kafkaproc: Nodes must be 1 or 3, got %d", opts.Nodes)
	}
	if opts.LibDir == "" {
		opts.LibDir = os.Getenv(EnvLib)
	}
	if opts.LibDir == "" {
		return nil, fmt.Errorf("kafkaproc: no LibDir given and %s is unset (run under kafkactl or call Fetch)", EnvLib)
	}
	if opts.Heap == "" {
		opts.Heap = "512m"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "INFO"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 120 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 10 * time.Second
	}
	libDir, err := filepath.Abs(opts.LibDir)
	if err != nil {
		return nil, err
	}
	version, err := LibVersion(libDir)
	if err != nil {
		return nil, err
	}
	storageTool, err := findClass(libDir, "kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool")
	if err != nil {
		return nil, err
	}
	java, err := exec.LookPath(javaCommand())
	if err != nil {
		return nil, fmt.Errorf("kafkaproc: java not found: %w", err)
	}

	c := &Cluster{opts: opts, libDir: libDir, version: version, java: java}
	if opts.Dir == "" {
		if c.dir, err = os.MkdirTemp("", "kafkaproc-"); err != nil {
			return nil, err
		}
		c.removeDir = true
	} else if c.dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, err
	}
	if c.clusterID, err = newClusterID(); err != nil {
		return nil, err
	}
	if opts.Security != nil {
		if err := c.setupSecurity(ctx); err != nil {
			c.cleanupDir()
			return nil, err
		}
	}
	// The free ports are picked before Kafka binds them, so another process
	// can take one in between; retry with new ports when that happens.
	for attempt := 1; ; attempt++ {
		err = c.launch(ctx, storageTool)
		if err == nil {
			return c, nil
		}
		if attempt == 3 || ctx.Err() != nil || !c.portConflict() {
			c.cleanupDir()
			return nil, err
		}
		c.logf("kafkaproc: a port was taken (%v); retrying with new ports", firstLine(err.Error()))
	}
}

// launch picks ports, prepares and starts every node and waits for them.
// On failure all started nodes are killed.
func (c *Cluster) launch(ctx context.Context, storageTool string) error {
	opts := c.opts
	per := 2 // broker and controller ports per node
	if c.sec != nil {
		per = 5
	}
	if opts.Proxy {
		per++
	}
	ports, err := pickPorts(per * opts.Nodes)
	if err != nil {
		return err
	}
	c.closeProxies()
	c.nodes = nil
	for i := 0; i < opts.Nodes; i++ {
		n := &node{
			id:             i + 1,
			dir:            filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1)),
			brokerPort:     ports[per*i],
			controllerPort: ports[per*i+1],
		}
		if c.sec != nil {
			n.sslPort, n.saslPort, n.saslSSLPort = ports[per*i+2], ports[per*i+3], ports[per*i+4]
		}
		c.nodes = append(c.nodes, n)
		if opts.Proxy {
			n.externalPort = ports[per*i+per-1]
			if n.proxy, err = netfault.Listen(net.JoinHostPort("127.0.0.1", strconv.Itoa(n.externalPort))); err != nil {
				c.closeProxies()
				return fmt.Errorf("kafkaproc: proxy of node %d: %w", n.id, err)
			}
		}
	}
	if err := c.prepare(ctx, storageTool); err != nil {
		c.closeProxies()
		return err
	}

	begin := time.Now()
	c.mu.Lock()
	for _, n := range c.nodes {
		if err := c.startNodeLocked(n); err != nil {
			c.mu.Unlock()
			c.killAll()
			return err
		}
	}
	c.mu.Unlock()
	if err := c.waitReady(ctx, nil); err != nil {
		c.killAll()
		c.closeProxies()
		return err
	}
	if !opts.SkipWarmup {
		if err := c.warmGroupCoordinator(ctx); err != nil {
			c.killAll()
			c.closeProxies()
			return err
		}
	}
	c.logf("kafkaproc: Kafka %s, %d node(s) ready in %s: %s", c.version, opts.Nodes,
		time.Since(begin).Round(time.Millisecond), strings.Join(c.Brokers(), ","))
	return nil
}

// portConflict reports whether a node's logs say it could not bind a port.
func (c *Cluster) portConflict() bool {
	for _, n := range c.nodes {
		for _, name := range []string{"server.log", "stdout.log"} {
			b, err := os.ReadFile(filepath.Join(n.dir, name))
			if err == nil && strings.Contains(string(b), "Address already in use") {
				return true
			}
		}
	}
	return false
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// prepare writes every node's configuration and formats its storage.
func (c *Cluster) prepare(ctx context.Context, storageTool string) error {
	var voters []string
	for _, n := range c.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", n.id, n.controllerPort))
	}
	for _, n := range c.nodes {
		if err := os.RemoveAll(n.dir); err != nil {
			return fmt.Errorf("kafkaproc: %w", err)
		}
		if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o755); err != nil {
			return fmt.Errorf("kafkaproc: %w", err)
		}
		props := c.serverProps(n, strings.Join(voters, ","))
		if err := os.WriteFile(filepath.Join(n.dir, "server.properties"), []byte(props), 0o644); err != nil {
			return fmt.Errorf("kafkaproc: %w", err)
		}
		if err := os.WriteFile(filepath.Join(n.dir, "log4j2.xml"), []byte(log4j2XML(n.dir, c.opts.LogLevel)), 0o644); err != nil {
			return fmt.Errorf("kafkaproc: %w", err)
		}
	}
	// Format all nodes in parallel: each is a short JVM run.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.format(ctx, n, storageTool)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// format runs the storage tool for node n.
func (c *Cluster) format(ctx context.Context, n *node, storageTool string) error {
	logPath := filepath.Join(n.dir, "format.log")
	// O_APPEND: log4j opens the same file from inside the JVM.
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("kafkaproc: %w", err)
	}
	args := []string{
		"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
		"-Dlog4j2.configurationFile=" + filepath.Join(n.dir, "log4j2.xml"),
		"-Dkafkaproc.logfile=" + logPath,
		"-Dkafka.logs.dir=" + n.dir,
		"-cp", filepath.Join(c.libDir, "*"),
		storageTool, "format",
		"--cluster-id=" + c.clusterID,
		"--config", filepath.Join(n.dir, "server.properties"),
	}
	if c.sec != nil {
		args = append(args, c.sec.scramArgs()...)
	}
	cmd := exec.Command(c.java, args...)
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = out, out
	p, err := startProcess(cmd, out)
	if err != nil {
		return fmt.Errorf("kafkaproc: formatting node %d: %w", n.id, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("kafkaproc: formatting node %d: %w", n.id, ctx.Err())
	}
	if p.waitErr != nil {
		return fmt.Errorf("kafkaproc: formatting node %d failed: %v\n--- %s (tail) ---\n%s",
			n.id, p.waitErr, logPath, tailFile(logPath, 30))
	}
	return nil
}

// serverProps renders server.properties for node n.
func (c *Cluster) serverProps(n *node, voters string) string {
	rf, minISR := "1", "1"
	if len(c.nodes) >= 3 {
		rf, minISR = "3", "2"
	}
	listeners := fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.brokerPort)
	protocols := "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
	if c.sec != nil {
		listeners += fmt.Sprintf(",SSL://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d,SASL_SSL://127.0.0.1:%d", n.sslPort, n.saslPort, n.saslSSLPort)
		protocols += ",SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
	}
	advertised := listeners
	if n.proxy != nil {
		// Bound on its own port, advertised at the proxy's: a client that
		// came in through the proxy is sent back to proxies only.
		listeners += fmt.Sprintf(",EXTERNAL://127.0.0.1:%d", n.externalPort)
		advertised += ",EXTERNAL://" + n.proxy.Addr()
		protocols += ",EXTERNAL:PLAINTEXT"
	}
	props := [][2]string{
		{"process.roles", "broker,controller"},
		{"node.id", strconv.Itoa(n.id)},
		{"controller.quorum.voters", voters},
		{"listeners", fmt.Sprintf("%s,CONTROLLER://127.0.0.1:%d", listeners, n.controllerPort)},
		{"advertised.listeners", advertised},
		{"listener.security.protocol.map", protocols},
		{"controller.listener.names", "CONTROLLER"},
		{"inter.broker.listener.name", "PLAINTEXT"},
		{"log.dirs", filepath.Join(n.dir, "data")},
		{"num.partitions", "1"},
		{"default.replication.factor", rf},
		{"min.insync.replicas", minISR},
		{"offsets.topic.replication.factor", rf},
		{"offsets.topic.num.partitions", "10"},
		{"transaction.state.log.replication.factor", rf},
		{"transaction.state.log.min.isr", minISR},
		{"transaction.state.log.num.partitions", "10"},
		{"share.coordinator.state.topic.replication.factor", rf},
		{"share.coordinator.state.topic.min.isr", minISR},
		{"auto.create.topics.enable", "true"},
		{"delete.topic.enable", "true"},
		{"group.initial.rebalance.delay.ms", "0"},
		// Detect killed nodes quickly (defaults: 9s session, 2s heartbeat).
		{"broker.session.timeout.ms", "4000"},
		{"broker.heartbeat.interval.ms", "500"},
		{"num.network.threads", "2"},
		{"num.io.threads", "4"},
		{"num.recovery.threads.per.data.dir", "1"},
		{"log.retention.check.interval.ms", "60000"},
	}
	if c.sec != nil {
		props = append(props, c.sec.securityProps()...)
	}
	extra := c.opts.ServerProps
	var b strings.Builder
	b.WriteString("# Generated by kafkaproc.\n")
	seen := map[string]bool{}
	for _, kv := range props {
		v := kv[1]
		if o, ok := extra[kv[0]]; ok {
			v = o
		}
		seen[kv[0]] = true
		fmt.Fprintf(&b, "%s=%s\n", kv[0], v)
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, extra[k])
	}
	return b.String()
}

// log4j2XML is a quiet log4j2 configuration writing to dir/server.log.
func log4j2XML(dir, level string) string {
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by kafkaproc. -->
<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="${sys:kafkaproc.logfile:-%s}" append="true">
      <PatternLayout pattern="[%%d{HH:mm:ss.SSS}] %%p %%m (%%c{1.})%%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="%s"><AppenderRef ref="file"/></Root>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
  </Loggers>
</Configuration>
`, filepath.Join(dir, "server.log"), level)
}

// startNodeLocked launches node n's JVM. c.mu must be held.
func (c *Cluster) startNodeLocked(n *node) error {
	stdoutPath := filepath.Join(n.dir, "stdout.log")
	out, err := os.OpenFile(stdoutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kafkaproc: %w", err)
	}
	args := []string{"-Xms128m", "-Xmx" + c.opts.Heap}
	if !choosesGC(c.opts.JVMOpts) {
		args = append(args, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
	}
	if !c.opts.FullJIT {
		args = append(args, "-XX:TieredStopAtLevel=1")
	}
	args = append(args,
		"-XX:+ExitOnOutOfMemoryError", "-XX:-UsePerfData",
		"-Djava.awt.headless=true",
		// Kafka flushes and closes its logs itself; log4j's own hook only
		// races with it and falls back to stderr during shutdown.
		"-Dlog4j2.shutdownHookEnabled=false",
		"-Dlog4j2.configurationFile="+filepath.Join(n.dir, "log4j2.xml"),
		"-Dkafka.logs.dir="+n.dir,
	)
	args = append(args, c.opts.JVMOpts...)
	args = append(args, "-cp", filepath.Join(c.libDir, "*"), "kafka.Kafka", filepath.Join(n.dir, "server.properties"))
	cmd := exec.Command(c.java, args...)
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = out, out
	p, err := startProcess(cmd, out)
	if err != nil {
		return fmt.Errorf("kafkaproc: starting node %d: %w", n.id, err)
	}
	n.proc = p
	return nil
}

// choosesGC reports whether opts select a garbage collector themselves
// (-XX:+Use...GC), in which case the default G1 flags are left out.
func choosesGC(opts []string) bool {
	for _, o := range opts {
		if strings.HasPrefix(o, "-XX:+Use") && strings.HasSuffix(o, "GC") {
			return true
		}
	}
	return false
}

// startProcess starts cmd from a goroutine locked to its OS thread that
// stays alive (in Wait) as long as the child does, so the Linux
// parent-death signal fires only when this process dies. logs are closed
// once the child has exited.
func startProcess(cmd *exec.Cmd, logs ...*os.File) (*process, error) {
	cmd.SysProcAttr = childSysProcAttr()
	p := &process{cmd: cmd, done: make(chan struct{}), logs: logs}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with this goroutine, after the
		// child is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			for _, f := range logs {
				f.Close()
			}
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.waitErr = cmd.Wait()
		for _, f := range logs {
			f.Close()
		}
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// StartTied starts cmd (which stays in the caller's process group, e.g. to
// receive terminal signals) such that on Linux it gets deathSig if the
// calling process dies. The returned channel yields cmd.Wait's result.
// kafkactl uses it for the command it wraps.
func StartTied(cmd *exec.Cmd, deathSig syscall.Signal) (<-chan error, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	setDeathSignal(cmd.SysProcAttr, deathSig)
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // see startProcess
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}

// signal sends sig to the process group of p.
func (p *process) signal(sig syscall.Signal) {
	if err := syscall.Kill(-p.pid, sig); err != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls until the brokers answer. With only == nil every node must
// list all nodes as live brokers; otherwise only that node is polled and must
// list itself.
func (c *Cluster) waitReady(ctx context.Context, only *node) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	var lastErr error
	for {
		c.mu.Lock()
		var targets []*node
		for _, n := range c.nodes {
			if only == nil || n == only {
				targets = append(targets, n)
			}
		}
		var dead *node
		for _, n := range targets {
			if n.proc == nil || n.proc.exited() {
				dead = n
				break
			}
		}
		var wantIDs []int
		if only == nil {
			for _, n := range c.nodes {
				wantIDs = append(wantIDs, n.id)
			}
		} else {
			wantIDs = []int{only.id}
		}
		c.mu.Unlock()
		if dead != nil {
			var why string
			if dead.proc != nil {
				why = fmt.Sprint(dead.proc.waitErr)
			} else {
				why = "not running"
			}
			return fmt.Errorf("kafkaproc: node %d exited during start-up (%s)\n%s", dead.id, why, c.logTails(dead))
		}

		lastErr = nil
		for _, n := range targets {
			if err := probe(ctx, n.brokerAddr(), wantIDs); err != nil {
				lastErr = fmt.Errorf("node %d (%s): %w", n.id, n.brokerAddr(), err)
				break
			}
		}
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			var tails []string
			for _, n := range targets {
				tails = append(tails, c.logTails(n))
			}
			return fmt.Errorf("kafkaproc: Kafka %s not ready after %s: %v (last probe error: %v)\n%s",
				c.version, c.opts.StartTimeout, ctx.Err(), lastErr, strings.Join(tails, "\n"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// warmGroupCoordinator makes the brokers create __consumer_offsets and
// waits until an OffsetFetch succeeds for one group on each of its
// partitions, i.e. every partition has a loaded, active group coordinator.
func (c *Cluster) warmGroupCoordinator(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	begin := time.Now()
	parts, err := strconv.Atoi(c.propValue("offsets.topic.num.partitions"))
	if err != nil || parts <= 0 {
		parts = 50
	}
	// A transport of its own, closed on return: kafka-go's DefaultTransport
	// would keep a connection and a metadata refresh goroutine for the
	// rest of the process, which then dials the cluster every few seconds
	// (and, against a frozen broker, stays blocked in a read: it showed up
	// as a leftover goroutine in TestStopLeavesNoGoroutines).
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(c.Brokers()...), Timeout: 5 * time.Second, Transport: tr}
	for _, group := range groupsCoveringPartitions("kafkaproc-warmup-", parts) {
		for {
			resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group})
			if err == nil {
				err = resp.Error
			}
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("kafkaproc: group coordinator for %q not available after %s: %v", group, time.Since(begin).Round(time.Millisecond), err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	c.logf("kafkaproc: group coordinators active on %d partitions in %s", parts, time.Since(begin).Round(time.Millisecond))
	return nil
}

// groupsCoveringPartitions returns, for each of n __consumer_offsets
// partitions, a group id that Kafka maps to it (abs(String.hashCode) % n).
func groupsCoveringPartitions(prefix string, n int) []string {
	out := make([]string, n)
	found := 0
	for i := 0; found < n && i < 1_000_000; i++ {
		g := prefix + strconv.Itoa(i)
		if p := (javaStringHash(g) & 0x7fffffff) % int32(n); out[p] == "" {
			out[p] = g
			found++
		}
	}
	return out
}

// javaStringHash is Java's String.hashCode for an ASCII string.
func javaStringHash(s string) int32 {
	var h int32
	for i := 0; i < len(s); i++ {
		h = 31*h + int32(s[i])
	}
	return h
}

// propValue returns the effective server.properties value of key as
// rendered for node 1.
func (c *Cluster) propValue(key string) string {
	for _, line := range strings.Split(c.serverProps(c.nodes[0], ""), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// probe sends metadata requests to addr and checks that every node in
// wantIDs is a live broker and that a controller is known.
func probe(ctx context.Context, addr string, wantIDs []int) error {
	d := &kafka.Dialer{Timeout: 2 * time.Second}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	live := map[int]bool{}
	for _, b := range brokers {
		live[b.ID] = true
	}
	for _, id := range wantIDs {
		if !live[id] {
			return fmt.Errorf("broker %d not live yet (%d live)", id, len(brokers))
		}
	}
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	if ctrl.ID < 0 {
		return errors.New("no controller yet")
	}
	return nil
}

// logTails returns the last lines of node n's server.log and stdout.log.
func (c *Cluster) logTails(n *node) string {
	var b strings.Builder
	for _, name := range []string{"server.log", "stdout.log"} {
		p := filepath.Join(n.dir, name)
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			continue
		}
		lines := strings.Split(tailFile(p, 25), "\n")
		for i, l := range lines {
			if len(l) > 300 {
				lines[i] = l[:300] + " [...]"
			}
		}
		fmt.Fprintf(&b, "--- node %d: %s (tail) ---\n%s\n", n.id, p, strings.Join(lines, "\n"))
	}
	return b.String()
}

// Brokers returns the PLAINTEXT addresses (127.0.0.1:port) of all nodes,
// in node order, whether or not they are currently running.
func (c *Cluster) Brokers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.brokerAddr()
	}
	return out
}

// ProxiedBrokers returns the addresses of the nodes' proxies, in node
// order; nil unless the cluster was started with Options.Proxy.
func (c *Cluster) ProxiedBrokers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.opts.Proxy {
		return nil
	}
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.proxy.Addr()
	}
	return out
}

// Proxy returns node i's fault proxy; nil unless the cluster was started
// with Options.Proxy.
func (c *Cluster) Proxy(i int) *netfault.Proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return nil
	}
	return c.nodes[i].proxy
}

// closeProxies closes the nodes' proxies, if any.
func (c *Cluster) closeProxies() {
	for _, n := range c.nodes {
		if n.proxy != nil {
			_ = n.proxy.Close()
			n.proxy = nil
		}
	}
}

// Version returns the Kafka version of the cluster, e.g. "4.1.1".
func (c *Cluster) Version() string { return c.version }

// Dir returns the cluster's working directory.
func (c *Cluster) Dir() string { return c.dir }

// Len returns the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// NodeID returns the Kafka node.id (= broker id) of node i, which is i+1.
func (c *Cluster) NodeID(i int) int { return i + 1 }

// Index returns the node index of the broker with the given node.id, or -1.
func (c *Cluster) Index(nodeID int) int {
	if nodeID < 1 || nodeID > len(c.nodes) {
		return -1
	}
	return nodeID - 1
}

// LogPath returns the path of node i's server.log.
func (c *Cluster) LogPath(i int) string {
	return filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1), "server.log")
}

// Running reports whether node i's process is alive.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return false
	}
	p := c.nodes[i].proc
	return p != nil && !p.exited()
}

// Kill sends SIGKILL to node i's process group and waits for it to exit.
// Killing a node that is not running is a no-op.
func (c *Cluster) Kill(i int) error {
	c.mu.Lock()
	if i < 0 || i >= len(c.nodes) {
		c.mu.Unlock()
		return fmt.Errorf("kafkaproc: no node %d", i)
	}
	n := c.nodes[i]
	p := n.proc
	n.proc = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	p.signal(syscall.SIGKILL)
	<-p.done
	c.logf("kafkaproc: killed node %d (%s)", n.id, n.brokerAddr())
	return nil
}

// Restart starts node i again with the same ports, configuration and data
// and waits until it answers metadata requests as a live broker. The node
// must not be running (use [Cluster.Kill] first).
func (c *Cluster) Restart(i int) error {
	return c.RestartContext(context.Background(), i)
}

// RestartContext is [Cluster.Restart] with a context bounding the wait.
func (c *Cluster) RestartContext(ctx context.Context, i int) error {
	c.mu.Lock()
	if c.stoppedAll {
		c.mu.Unlock()
		return errors.New("kafkaproc: cluster is stopped")
	}
	if i < 0 || i >= len(c.nodes) {
		c.mu.Unlock()
		return fmt.Errorf("kafkaproc: no node %d", i)
	}
	n := c.nodes[i]
	if n.proc != nil && !n.proc.exited() {
		c.mu.Unlock()
		return fmt.Errorf("kafkaproc: node %d is still running", i)
	}
	n.proc = nil
	begin := time.Now()
	err := c.startNodeLocked(n)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx, n); err != nil {
		return err
	}
	c.logf("kafkaproc: node %d restarted in %s", n.id, time.Since(begin).Round(time.Millisecond))
	return nil
}

// Stop shuts every node down: SIGTERM to each process group, then SIGKILL
// for those still alive after Options.StopTimeout. A temporary Dir created
// by Start is removed. Stop is idempotent; later calls return the first
// result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		c.stoppedAll = true
		var procs []*process
		for _, n := range c.nodes {
			if n.proc != nil {
				procs = append(procs, n.proc)
				n.proc = nil
			}
		}
		c.mu.Unlock()
		begin := time.Now()
		for _, p := range procs {
			p.signal(syscall.SIGTERM)
		}
		deadline := time.NewTimer(c.opts.StopTimeout)
		defer deadline.Stop()
		killed := 0
		for _, p := range procs {
			select {
			case <-p.done:
			case <-deadline.C:
				for _, q := range procs {
					if !q.exited() {
						q.signal(syscall.SIGKILL)
						killed++
					}
				}
				<-p.done
			}
		}
		// A graceful exit can leave stray children in a group; make sure.
		for _, p := range procs {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
		c.logf("kafkaproc: stopped %d node(s) in %s (%d needed SIGKILL)", len(procs), time.Since(begin).Round(time.Millisecond), killed)
		c.mu.Lock()
		c.closeProxies()
		c.mu.Unlock()
		c.cleanupDir()
	})
	return c.stopErr
}

// killAll SIGKILLs every running node (used when Start fails).
func (c *Cluster) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.proc != nil {
			n.proc.signal(syscall.SIGKILL)
			<-n.proc.done
			n.proc = nil
		}
	}
}

func (c *Cluster) cleanupDir() {
	if c.removeDir {
		if err := os.RemoveAll(c.dir); err != nil && c.stopErr == nil {
			c.stopErr = err
		}
	}
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// newClusterID returns a random Kafka cluster id: 16 random bytes in
// unpadded URL-safe base64 (22 characters), never starting with '-' so it
// cannot be mistaken for a flag.
func newClusterID() (string, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id, nil
		}
	}
}

// pickPorts is freePorts, replaceable by tests.
var pickPorts = freePorts

// freePorts returns n distinct free TCP ports on 127.0.0.1. The listeners
// are held until all ports are picked, so the ports differ from each other;
// another process may still grab one before Kafka binds it.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kafkaproc: picking a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// findClass returns the first of the given class names that exists in a jar
// of libDir.
func findClass(libDir string, names ...string) (string, error) {
	jars, err := filepath.Glob(filepath.Join(libDir, "kafka*.jar"))
	if err != nil {
		return "", err
	}
	want := map[string]string{}
	for _, n := range names {
		want[strings.ReplaceAll(n, ".", "/")+".class"] = n
	}
	found := map[string]bool{}
	for _, j := range jars {
		zr, err := zip.OpenReader(j)
		if err != nil {
			continue
		}
		for _, f := range zr.File {
			if n, ok := want[f.Name]; ok {
				found[n] = true
			}
		}
		zr.Close()
	}
	for _, n := range names {
		if found[n] {
			return n, nil
		}
	}
	return "", fmt.Errorf("kafkaproc: none of %v found in %s", names, libDir)
}
