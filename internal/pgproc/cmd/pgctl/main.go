// Command pgctl fetches and runs a real PostgreSQL server for tests.
//
// Usage:
//
//	pgctl fetch [-version V] [-cache DIR]
//	pgctl run   [-version V] [-cache DIR] -- command [args...]
//
// "fetch" only materialises the binaries into the cache (by default
// <repo>/.cache/postgres, where <repo> is the nearest directory above the
// working directory holding go.work or go.mod). "run" fetches, starts a
// server on 127.0.0.1 (see package pgproc), runs the command with
// KAVARI_PG_DSN and KAVARI_PG_HOME (the binaries) exported, stops the server when the command ends (or when
// pgctl gets SIGINT/SIGTERM, passed on to the command) and exits with the
// command's exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kavari-go/kavari/internal/kafkaproc"
	"github.com/kavari-go/kavari/internal/pgproc"
)

func main() {
	kafkaproc.SetParentDeathSignal(syscall.SIGTERM)
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	if len(args) == 0 || (args[0] != "fetch" && args[0] != "run") {
		fmt.Fprintln(os.Stderr, "usage: pgctl fetch|run [-version V] [-cache DIR] [-- command args...]")
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	version := fs.String("version", pgproc.DefaultVersion, "version of the binaries artifact")
	cache := fs.String("cache", "", "cache directory (default <repo>/.cache/postgres)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *cache == "" {
		root, err := repoRoot()
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgctl: %v\n", err)
			return 2
		}
		*cache = filepath.Join(root, ".cache", "postgres")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	home, err := pgproc.Fetch(ctx, *cache, *version)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgctl: %v\n", err)
		return 1
	}
	if args[0] == "fetch" {
		fmt.Println(home)
		return 0
	}
	command := fs.Args()
	if len(command) == 0 {
		fmt.Fprintln(os.Stderr, "pgctl run: no command after --")
		return 2
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	srv, err := pgproc.Start(ctx, pgproc.Options{Home: home})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgctl: %v\n", err)
		return 1
	}
	defer srv.Stop()
	fmt.Fprintf(os.Stderr, "pgctl: PostgreSQL %s on 127.0.0.1:%d\n", *version, srv.Port)
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(), pgproc.EnvDSN+"="+srv.DSN, pgproc.EnvHome+"="+home)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	waited, err := kafkaproc.StartTied(cmd, syscall.SIGTERM)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgctl: %v\n", err)
		return 127
	}
	var werr error
loop:
	for {
		select {
		case werr = <-waited:
			break loop
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		}
	}
	if werr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		return ee.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "pgctl: %v\n", werr)
	return 1
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s; pass -cache", wd)
		}
	}
}
