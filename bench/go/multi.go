// Multi-processor benchmarks, the Go twins of bench/lugo/multi.lua
// (run with GOMAXPROCS=2).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

func report(name string, value float64, unit string) { fmt.Printf("%s %.1f %s\n", name, value, unit) }

// xpingpong: two goroutines pass a value back and forth. Go's scheduler
// keeps both on one P (a same-thread hand-off); lugo's are on two
// processors, so each of its hand-offs crosses threads. The fair twin
// (locked) locks each goroutine to its own OS thread, so that Go's
// hand-offs cross threads too.
func xpingpong(n int, locked bool) {
	ping, pong, ready := make(chan int), make(chan int), make(chan bool)
	go func() {
		if locked {
			runtime.LockOSThread()
		}
		ready <- true
		for i := 0; i < n; i++ {
			pong <- <-ping
		}
	}()
	if locked {
		runtime.LockOSThread()
	}
	<-ready
	t := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	name := "xpingpong"
	if locked {
		name = "xpingpong_locked"
	}
	report(name, float64(time.Since(t).Nanoseconds())/float64(n), "ns/roundtrip")
}

func fanout(n int) {
	jobs, results := make(chan int, 1024), make(chan int, 1024)
	workers := 2 * runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	t := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			for x := range jobs {
				results <- x * x % 7
			}
			wg.Done()
		}()
	}
	go func() {
		for i := 1; i <= n; i++ {
			jobs <- i
		}
		close(jobs)
	}()
	go func() {
		wg.Wait()
		close(results)
	}()
	sum := 0
	for r := range results {
		sum += r
	}
	report("fanout", float64(time.Since(t).Nanoseconds())/float64(n), "ns/job")
	if sum == 0 {
		panic("no results")
	}
}

func cpu(n int) {
	procs := runtime.GOMAXPROCS(0)
	out := make(chan float64, procs)
	t := time.Now()
	for p := 1; p <= procs; p++ {
		from, to := (p-1)*n/procs+1, p*n/procs
		go func(from, to int) {
			s := 0.0
			for k := from; k <= to; k++ {
				s += float64((k * k) % 13)
			}
			out <- s
		}(from, to)
	}
	sum := 0.0
	for p := 0; p < procs; p++ {
		sum += <-out
	}
	report("cpu", float64(time.Since(t).Nanoseconds())/1e6, "ms")
	if sum == 0 {
		panic("no sum")
	}
}

// The concurrent prime sieve, as bench/lugo/multi.lua's: the first n primes.
func sieve(n int) {
	t := time.Now()
	ch := make(chan int)
	go func(out chan<- int) {
		for i := 2; ; i++ {
			out <- i
		}
	}(ch)
	prime := 0
	for i := 0; i < n; i++ {
		prime = <-ch
		out := make(chan int)
		go func(in <-chan int, out chan<- int, p int) {
			for {
				if v := <-in; v%p != 0 {
					out <- v
				}
			}
		}(ch, out, prime)
		ch = out
	}
	report("sieve", float64(time.Since(t).Nanoseconds())/1e6, "ms")
	if prime <= n {
		panic("no prime")
	}
}

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	switch os.Args[1] {
	case "xpingpong":
		xpingpong(n, false)
	case "xpingpong_locked":
		xpingpong(n, true)
	case "fanout":
		fanout(n)
	case "cpu":
		cpu(n)
	case "sieve":
		sieve(n)
	}
}
