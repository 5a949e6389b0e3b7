// HTTP hello server on net/http: the Go twin of examples/hello_http.lua,
// measured by bench/http (run with GOMAXPROCS=2).
// Usage: httpserver ADDR
//
// Every path answers "hello\n", except /stats, which answers the number of
// TCP connections accepted so far (this one included); the same count goes
// to stderr when the server gets SIGTERM or SIGINT. bench/http reads it
// before and after the client benchmark to see how many connections a
// client's pool opened.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
)

var accepted atomic.Int64

var hello = []byte("hello\n")

func handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/stats" {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "accepted %d\n", accepted.Load())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(hello)))
	w.Write(hello)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: httpserver ADDR")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		fmt.Fprintf(os.Stderr, "httpserver: accepted %d connections\n", accepted.Load())
		os.Exit(0)
	}()
	srv := &http.Server{
		Handler: http.HandlerFunc(handle),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				accepted.Add(1)
			}
		},
	}
	fmt.Fprintln(os.Stderr, srv.Serve(ln))
	os.Exit(1)
}
