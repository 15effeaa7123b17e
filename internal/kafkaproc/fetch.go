package kafkaproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// DefaultVersion is the Kafka release fetched by [Fetch].
const DefaultVersion = "4.1.1"

// Versions of the artifacts added next to Kafka. Kafka 4.x logs through
// SLF4J and ships log4j2 as its backend; the server jars on Maven Central
// leave the backend out, so the pom adds it. slf4j-api is pinned to 2.x so the
// log4j-slf4j2-impl provider is picked regardless of what Kafka declares.
const (
	scalaBinaryVersion = "2.13"
	log4jVersion       = "2.24.3"
	slf4jVersion       = "2.0.17"
	dependencyPlugin   = "3.8.1"
)

// completeMarker is written into the version directory after a successful
// fetch; its presence makes later calls return immediately.
const completeMarker = ".complete"

// Fetch materialises Kafka [DefaultVersion] into cacheDir (normally
// "<repo>/.cache/kafka") and returns the directory holding its jars,
// cacheDir/<version>/lib. See [FetchVersion].
func Fetch(ctx context.Context, cacheDir string) (libDir string, err error) {
	return FetchVersion(ctx, cacheDir, DefaultVersion)
}

// FetchVersion materialises the Kafka server (org.apache.kafka:kafka_2.13 at
// version, which must be 4.x or later: only KRaft mode is supported), its
// runtime dependencies and a log4j2 backend into cacheDir/<version>/lib.
//
// It writes a small pom.xml into cacheDir/<version> and runs
// "mvn -q -B dependency:copy-dependencies" on it, so it needs only Maven and a
// JDK on PATH; Maven's own repository (~/.m2) is used as a download cache.
// Maven's output goes to cacheDir/<version>/fetch.log. A marker file is
// written after success and later calls return at once. Concurrent callers
// (even in different processes) are serialised with a file lock.
func FetchVersion(ctx context.Context, cacheDir, version string) (libDir string, err error) {
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.-]*$`).MatchString(version) {
		return "", fmt.Errorf("kafkaproc: invalid Kafka version %q", version)
	}
	if cacheDir == "" {
		return "", errors.New("kafkaproc: empty cache directory")
	}
	cacheDir, err = filepath.Abs(cacheDir)
	if err != nil {
		return "", err
	}
	vdir := filepath.Join(cacheDir, version)
	libDir = filepath.Join(vdir, "lib")
	if cached(vdir, libDir) {
		return libDir, nil
	}
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}

	unlock, err := LockFile(ctx, filepath.Join(vdir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if cached(vdir, libDir) { // another process finished while we waited
		return libDir, nil
	}

	mvn, err := exec.LookPath("mvn")
	if err != nil {
		return "", errors.New("kafkaproc: Maven (mvn) is not on PATH; it is needed to fetch Kafka (e.g. apt-get install maven)")
	}
	if _, err := exec.LookPath(javaCommand()); err != nil {
		return "", fmt.Errorf("kafkaproc: java not found (%v); a JDK 17+ is needed", err)
	}

	pomPath := filepath.Join(vdir, "pom.xml")
	if err := os.WriteFile(pomPath, []byte(pomXML(version)), 0o644); err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}
	tmpLib := libDir + ".tmp"
	if err := os.RemoveAll(tmpLib); err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}
	_ = os.RemoveAll(libDir)

	logPath := filepath.Join(vdir, "fetch.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, mvn, "-q", "-B",
		"-f", pomPath,
		"dependency:copy-dependencies",
		"-DincludeScope=runtime",
		"-DoutputDirectory="+tmpLib,
	)
	cmd.Dir = vdir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childSysProcAttr()
	start := time.Now()
	if err := cmd.Run(); err != nil {
		_ = logFile.Sync()
		return "", fmt.Errorf("kafkaproc: fetching Kafka %s with mvn failed after %s: %v\n--- %s (tail) ---\n%s",
			version, time.Since(start).Round(time.Millisecond), err, logPath, tailFile(logPath, 40))
	}
	if _, err := findKafkaJar(tmpLib); err != nil {
		return "", fmt.Errorf("kafkaproc: mvn succeeded but %v", err)
	}
	if err := os.Rename(tmpLib, libDir); err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}
	jars, _ := filepath.Glob(filepath.Join(libDir, "*.jar"))
	sort.Strings(jars)
	var manifest bytes.Buffer
	for _, j := range jars {
		manifest.WriteString(filepath.Base(j))
		manifest.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(vdir, completeMarker), manifest.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}
	return libDir, nil
}

// cached reports whether vdir holds a completed fetch.
func cached(vdir, libDir string) bool {
	if _, err := os.Stat(filepath.Join(vdir, completeMarker)); err != nil {
		return false
	}
	_, err := findKafkaJar(libDir)
	return err == nil
}

// pomXML returns the throw-away project whose runtime dependencies are the
// Kafka server plus its logging backend.
func pomXML(version string) string {
	dep := func(g, a, v string) string {
		return fmt.Sprintf("    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n", g, a, v)
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by github.com/kavari-go/kavari/internal/kafkaproc; do not edit. -->
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>kavari.local</groupId>
  <artifactId>kafka-server-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
`)
	b.WriteString(dep("org.apache.kafka", "kafka_"+scalaBinaryVersion, version))
	b.WriteString(dep("org.slf4j", "slf4j-api", slf4jVersion))
	b.WriteString(dep("org.apache.logging.log4j", "log4j-api", log4jVersion))
	b.WriteString(dep("org.apache.logging.log4j", "log4j-core", log4jVersion))
	b.WriteString(dep("org.apache.logging.log4j", "log4j-slf4j2-impl", log4jVersion))
	fmt.Fprintf(&b, `  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>%s</version>
      </plugin>
    </plugins>
  </build>
</project>
`, dependencyPlugin)
	return b.String()
}

// kafkaJarRE matches the Kafka core jar, e.g. kafka_2.13-4.1.1.jar.
var kafkaJarRE = regexp.MustCompile(`^kafka_[0-9.]+-([0-9][^/]*)\.jar$`)

// findKafkaJar returns the path of the Kafka core jar in libDir.
func findKafkaJar(libDir string) (string, error) {
	entries, err := os.ReadDir(libDir)
	if err != nil {
		return "", fmt.Errorf("no Kafka jars in %s: %v", libDir, err)
	}
	for _, e := range entries {
		if m := kafkaJarRE.FindStringSubmatch(e.Name()); m != nil && !strings.Contains(e.Name(), "-test") {
			return filepath.Join(libDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("no kafka_%s-<version>.jar in %s", scalaBinaryVersion, libDir)
}

// LibVersion returns the Kafka version of the jars in libDir (as returned by
// [Fetch]), derived from the name of the core jar.
func LibVersion(libDir string) (string, error) {
	jar, err := findKafkaJar(libDir)
	if err != nil {
		return "", fmt.Errorf("kafkaproc: %w", err)
	}
	return kafkaJarRE.FindStringSubmatch(filepath.Base(jar))[1], nil
}

// LockFile takes an exclusive flock on path, polling so ctx can cancel the
// wait. The returned function releases it. It guards a download into a
// shared cache (the Kafka jars here, the PostgreSQL binaries of the outbox's
// tests) against concurrent test processes.
func LockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kafkaproc: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("kafkaproc: locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kafkaproc: waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// javaCommand returns the java executable: $JAVA_HOME/bin/java when
// JAVA_HOME is set and holds one, "java" otherwise.
func javaCommand() string {
	if h := os.Getenv("JAVA_HOME"); h != "" {
		p := filepath.Join(h, "bin", "java")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return "java"
}

// tailFile returns the last n lines of the file at path (at most 64 KiB are
// read), or a note saying why it could not be read.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const max = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	k, _ := f.ReadAt(buf, off)
	lines := strings.Split(strings.TrimRight(string(buf[:k]), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // first line is probably partial
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
