// Command kfakebroker runs kavaritest's embedded broker (franz-go's kfake) as
// a process of its own, for the tests of the kavari module: that module does
// not require kfake (a program importing kavari must not get it in its module
// graph), so its tests cannot embed the broker and run this instead, through
// internal/testenv.
//
// It prints the bootstrap addresses, comma-separated, on one line of its
// standard output, and stops the broker when its standard input ends (the
// test process exited or closed it) or on SIGINT/SIGTERM.
//
//	kfakebroker [-partitions 3] [-brokers 1] [-topics a,b]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kavari-go/kavari/kavaritest"
)

func main() {
	partitions := flag.Int("partitions", 3, "partition count of seeded and auto-created topics")
	brokers := flag.Int("brokers", 1, "brokers in the cluster")
	topics := flag.String("topics", "", "comma-separated topics to create up front")
	flag.Parse()

	opts := []kavaritest.Option{kavaritest.Partitions(*partitions), kavaritest.Brokers(*brokers)}
	if *topics != "" {
		opts = append(opts, kavaritest.Topics(strings.Split(*topics, ",")...))
	}
	b, err := kavaritest.Start(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(1)
	}
	defer b.Close()
	fmt.Println(strings.Join(b.Addrs(), ","))

	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
}
