package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// brokerPkg is the program that runs kavaritest's embedded broker (kfake).
// It lives in the kavaritest module, which requires kfake; the kavari module
// builds and runs it rather than importing kfake.
const brokerPkg = "github.com/kavari-go/kavari/kavaritest/internal/kfakebroker"

// Broker is an embedded kfake broker running in a child process.
type Broker struct {
	addrs []string
	cmd   *exec.Cmd // go run, which runs the broker
	stdin io.WriteCloser
	once  sync.Once
}

// Option configures an embedded Broker.
type Option func(*options)

type options struct {
	partitions, brokers int
	topics              []string
}

// Partitions sets the partition count of seeded and auto-created topics
// (default 3).
func Partitions(n int) Option { return func(o *options) { o.partitions = n } }

// Topics creates topics up front (auto-creation is on in any case).
func Topics(names ...string) Option {
	return func(o *options) { o.topics = append(o.topics, names...) }
}

// Nodes sets how many brokers the embedded cluster has (default 1).
func Nodes(n int) Option { return func(o *options) { o.brokers = n } }

// NewEmbedded starts an embedded broker for t and stops it when t ends.
func NewEmbedded(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	b, err := StartEmbedded(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// StartEmbedded starts an embedded broker on loopback: kavaritest's kfake
// broker in a child process, with go run in the workspace of this checkout
// (its go.work, whatever GOWORK says; go caches the executable). Close it
// when done; it also stops when the test process exits.
func StartEmbedded(opts ...Option) (*Broker, error) {
	o := options{partitions: 3, brokers: 1}
	for _, opt := range opts {
		opt(&o)
	}
	work, err := workspace()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "run", brokerPkg, "-partitions", strconv.Itoa(o.partitions),
		"-brokers", strconv.Itoa(o.brokers), "-topics", strings.Join(o.topics, ","))
	cmd.Dir = filepath.Dir(work)
	// The workspace's go command takes no -mod flag (GOFLAGS=-mod=mod would
	// fail it), and the broker needs none of the test's flags.
	cmd.Env = append(os.Environ(), "GOWORK="+work, "GOFLAGS=")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testenv: start the embedded broker: %w", err)
	}
	b := &Broker{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("testenv: the embedded broker (go run %s) gave no addresses: %w", brokerPkg, err)
	}
	b.addrs = strings.Split(strings.TrimSpace(line), ",")
	return b, nil
}

// Addrs returns the bootstrap addresses.
func (b *Broker) Addrs() []string { return b.addrs }

// Close stops the broker: its listeners and connections close as the process
// exits.
func (b *Broker) Close() {
	b.once.Do(func() {
		_ = b.stdin.Close()
		done := make(chan struct{})
		go func() { _ = b.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill() // the broker still sees its input end
			<-done
		}
	})
}

// workspace returns the go.work of this checkout: the first one found going
// up from the test's working directory (its package's directory).
func workspace() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if p := filepath.Join(dir, "go.work"); fileExists(p) {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.work above the working directory: the embedded broker is built from the workspace of a kavari checkout")
		}
		dir = parent
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
