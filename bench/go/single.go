// One-processor benchmarks, the Go twins of bench/lugo/single.lua: the same
// work, printed as "name value unit".
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

func rss() int64 {
	b, _ := os.ReadFile("/proc/self/statm")
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * 4096
}

func pingpong(n int) {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for i := 0; i < n; i++ {
			pong <- <-ping
		}
	}()
	t := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	report("pingpong", float64(time.Since(t).Nanoseconds())/float64(n), "ns/roundtrip")
}

func buffered(n int) {
	c := make(chan int, 128)
	go func() {
		for i := 1; i <= n; i++ {
			c <- i
		}
		close(c)
	}()
	t := time.Now()
	sum := 0
	for v := range c {
		sum += v
	}
	if sum != n*(n+1)/2 {
		panic("lost values")
	}
	report("buffered", float64(time.Since(t).Nanoseconds())/float64(n), "ns/item")
}

func spawn(n int) {
	var wg sync.WaitGroup
	t := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
	}
	wg.Wait()
	report("spawn", float64(time.Since(t).Nanoseconds())/float64(n), "ns/goroutine")
}

func selectb(n int) {
	a, b := make(chan int, 1), make(chan int, 1)
	a <- 1
	b <- 1
	t := time.Now()
	for i := 0; i < n; i++ {
		select {
		case <-a:
			a <- 1
		case <-b:
			b <- 1
		}
	}
	report("select", float64(time.Since(t).Nanoseconds())/float64(n), "ns/select")
}

func mutex(n int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	counter := 0
	t := time.Now()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			for i := 0; i < n; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	if counter != 4*n {
		panic("lost increments")
	}
	report("mutex", float64(time.Since(t).Nanoseconds())/float64(4*n), "ns/lock")
}

func sleepers(n int) {
	var wg sync.WaitGroup
	t := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			time.Sleep(10 * time.Millisecond)
			wg.Done()
		}()
	}
	wg.Wait()
	report("sleepers", float64(time.Since(t).Nanoseconds())/1e6, "ms")
}

func parked(n int) {
	runtime.GC()
	before := rss()
	c := make(chan int)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			wg.Done()
			<-c
		}()
	}
	wg.Wait()
	runtime.GC()
	after := rss()
	report("parked", float64(after-before)/float64(n), "bytes/goroutine")
	report("parked_rss", float64(after)/1048576, "MiB")
	close(c)
}

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	switch os.Args[1] {
	case "pingpong":
		pingpong(n)
	case "buffered":
		buffered(n)
	case "spawn":
		spawn(n)
	case "select":
		selectb(n)
	case "mutex":
		mutex(n)
	case "sleepers":
		sleepers(n)
	case "parked":
		parked(n)
	}
}
