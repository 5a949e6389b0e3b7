// TCP echo server, one goroutine per connection: the Go twin of
// bench/lugo/echo.lua, measured by bench/net with bench/go/echoclient.go.
// Usage: echoserver ADDR (run with GOMAXPROCS=2).
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func handle(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echoserver ADDR")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			// EMFILE and the like: report, back off, keep serving the others
			fmt.Fprintln(os.Stderr, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go handle(c)
	}
}
