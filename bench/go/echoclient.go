// Client for the echo benchmarks in bench/net, run against both
// bench/go/echoserver.go and bench/lugo/echo.lua (with GOMAXPROCS=2).
//
//	echoclient ADDR rtt CONNS SECONDS   closed-loop 64-byte round trips
//	echoclient ADDR idle CONNS PID      memory of server PID per open connection
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const msgSize = 64

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "echoclient: "+format+"\n", a...)
	os.Exit(1)
}

func usage() { fail("usage: echoclient ADDR rtt CONNS SECONDS | echoclient ADDR idle CONNS PID") }

func newMsg(id int) []byte {
	msg := make([]byte, msgSize)
	for i := range msg {
		msg[i] = byte(id + i)
	}
	return msg
}

// roundTrip stamps msg with seq so that a stale or misrouted echo cannot
// pass the check.
func roundTrip(c net.Conn, msg, back []byte, seq uint64) error {
	binary.LittleEndian.PutUint64(msg, seq)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, back); err != nil {
		return err
	}
	if !bytes.Equal(msg, back) {
		fail("echo mismatch: sent %x, got %x", msg, back)
	}
	return nil
}

// dialRetry waits for a server that may still be starting up.
func dialRetry(addr string, deadline time.Time) net.Conn {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			fail("dial %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rtt(addr string, conns int, secs float64) {
	deadline := time.Now().Add(5 * time.Second)
	cs := make([]net.Conn, conns)
	for i := range cs {
		cs[i] = dialRetry(addr, deadline)
	}
	// one cache line per counter, so that connections do not slow each other
	counts := make([]struct {
		n uint64
		_ [56]byte
	}, conns)
	var stop atomic.Bool
	for i, c := range cs {
		go func(i int, c net.Conn) {
			msg, back := newMsg(i), make([]byte, msgSize)
			for seq := uint64(0); ; seq++ {
				err := roundTrip(c, msg, back, seq)
				if stop.Load() {
					return
				}
				if err != nil {
					fail("connection %d: %v", i, err)
				}
				atomic.AddUint64(&counts[i].n, 1)
			}
		}(i, c)
	}
	total := func() (n uint64) {
		for i := range counts {
			n += atomic.LoadUint64(&counts[i].n)
		}
		return n
	}
	time.Sleep(500 * time.Millisecond) // warm-up: connections settled, JIT traces compiled
	n0, t0 := total(), time.Now()
	time.Sleep(time.Duration(secs * float64(time.Second)))
	n, elapsed := total()-n0, time.Since(t0).Seconds()
	stop.Store(true)
	if n == 0 {
		fail("no round trips in %.1f s", elapsed)
	}
	fmt.Printf("rtt_per_sec %d\n", int64(float64(n)/elapsed))
	fmt.Printf("latency_us %.1f\n", elapsed*1e6*float64(conns)/float64(n))
}

func vmRSS(pid string) int64 {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		fail("%v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				fail("VmRSS of %s: %v", pid, err)
			}
			return kb
		}
	}
	fail("no VmRSS for process %s", pid)
	return 0
}

func idle(addr string, conns int, pid string) {
	before := vmRSS(pid)
	// Opening thousands at once overflows the accept queue (SYNs or ACKs are
	// dropped, connects fail or never get served): bound the number in
	// flight and retry each connection until the common deadline.
	deadline := time.Now().Add(30 * time.Second)
	cs := make([]net.Conn, conns)
	inflight := make(chan struct{}, 200)
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		inflight <- struct{}{}
		go func(i int) {
			defer func() { <-inflight; wg.Done() }()
			msg, back := newMsg(i), make([]byte, msgSize)
			for {
				c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
				if err == nil {
					// the echo proves that the server accepted and serves it
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if err = roundTrip(c, msg, back, 0); err == nil {
						c.SetDeadline(time.Time{})
						cs[i] = c
						return
					}
					c.Close()
				}
				if time.Now().After(deadline) {
					fail("connection %d of %d: %v", i+1, conns, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}(i)
	}
	wg.Wait()
	time.Sleep(time.Second) // let the server settle (buffers freed, GC run)
	after := vmRSS(pid)
	fmt.Printf("idle_bytes_per_conn %d\n", (after-before)*1024/int64(conns))
	fmt.Printf("idle_rss_mib %.1f\n", float64(after)/1024)
	for _, c := range cs {
		c.Close()
	}
}

func main() {
	if len(os.Args) != 5 {
		usage()
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	addr, mode := os.Args[1], os.Args[2]
	conns, err := strconv.Atoi(os.Args[3])
	if err != nil || conns < 1 {
		usage()
	}
	switch mode {
	case "rtt":
		secs, err := strconv.ParseFloat(os.Args[4], 64)
		if err != nil || secs <= 0 {
			usage()
		}
		rtt(addr, conns, secs)
	case "idle":
		idle(addr, conns, os.Args[4])
	default:
		usage()
	}
}
