// Clients for bench/http, run against bench/go/httpserver.go, lugo's hello
// servers and OpenResty (with GOMAXPROCS=2).
//
//	httpclient idle N ADDR PID[,PID...]  memory per idle keep-alive connection
//	httpclient load G R URL              G goroutines, R GETs each, one pool
//
// idle opens N connections, makes one GET on each (proof that the server
// serves it) and holds them; it prints the growth of the servers' summed
// VmRSS divided by N (idle_bytes_per_conn) and the RSS with them open
// (idle_rss_mib). load prints reqs_per_sec over a net/http Client whose
// Transport keeps up to G idle connections to the host, as many as there
// are goroutines, so that no request has to dial once the pool is warm.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "httpclient: "+format+"\n", a...)
	os.Exit(1)
}

func usage() {
	fail("usage: httpclient idle N ADDR PID[,PID...] | httpclient load G R URL")
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

func rssKiB(pids []string) (kb int64) {
	for _, p := range pids {
		kb += vmRSS(p)
	}
	return kb
}

// get makes one GET on c and reads the whole response; the connection must
// stay open afterwards.
func get(c net.Conn, host string) error {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return err
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != 200 || string(body) != "hello\n" || res.Close {
		return fmt.Errorf("unexpected response: %s %q (close %v)", res.Status, body, res.Close)
	}
	return nil
}

func idle(conns int, addr string, pids []string) {
	before := rssKiB(pids)
	// Opening thousands at once overflows the accept queue: bound the number
	// in flight and retry each connection until the common deadline.
	deadline := time.Now().Add(30 * time.Second)
	cs := make([]net.Conn, conns)
	inflight := make(chan struct{}, 200)
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		inflight <- struct{}{}
		go func(i int) {
			defer func() { <-inflight; wg.Done() }()
			for {
				c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
				if err == nil {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if err = get(c, addr); err == nil {
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
	after := rssKiB(pids)
	fmt.Printf("idle_bytes_per_conn %d\n", (after-before)*1024/int64(conns))
	fmt.Printf("idle_rss_mib %.1f\n", float64(after)/1024)
	for _, c := range cs {
		c.Close()
	}
}

func load(gs, reqs int, url string) {
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        gs,
		MaxIdleConnsPerHost: gs,
	}}
	var failed atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := 0; g < gs; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < reqs; i++ {
				res, err := client.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || string(body) != "hello\n" {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	if n := failed.Load(); n > 0 {
		fail("%d of %d requests failed", n, gs*reqs)
	}
	fmt.Printf("reqs_per_sec %.0f\n", float64(gs*reqs)/elapsed)
	fmt.Printf("seconds %.3f\n", elapsed)
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
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n < 1 {
		usage()
	}
	switch os.Args[1] {
	case "idle":
		idle(n, os.Args[3], strings.Split(os.Args[4], ","))
	case "load":
		reqs, err := strconv.Atoi(os.Args[3])
		if err != nil || reqs < 1 {
			usage()
		}
		load(n, reqs, os.Args[4])
	default:
		usage()
	}
}
