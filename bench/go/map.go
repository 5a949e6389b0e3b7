// The Go twins of bench/lugo/map.lua: the same work, printed as
// "name value unit". Run with GOMAXPROCS=2.
package main

import (
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func report(name string, value float64, unit string) { fmt.Printf("%s %.1f %s\n", name, value, unit) }

func rss() int64 {
	b, _ := os.ReadFile("/proc/self/statm")
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * 4096
}

// 10,000 keys of 16 bytes.
func keys() []string {
	ks := make([]string, 10000)
	for i := range ks {
		ks[i] = fmt.Sprintf("key-%012d", i)
	}
	return ks
}

// 90% load, 10% store, from 2 goroutines, n operations each.
func mixed(n int, load func(string) bool, store func(string, float64)) float64 {
	ks := keys()
	for i, k := range ks {
		store(k, float64(i))
	}
	var wg sync.WaitGroup
	t := time.Now()
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(seed int64) {
			r := rand.New(rand.NewSource(seed))
			for i := 0; i < n; i++ {
				k := ks[r.Intn(len(ks))]
				if r.Intn(10) == 0 {
					store(k, float64(i))
				} else {
					load(k)
				}
			}
			wg.Done()
		}(int64(w + 1))
	}
	wg.Wait()
	return float64(2*n) / time.Since(t).Seconds()
}

func syncmap(n int) {
	var m sync.Map
	ops := mixed(n, func(k string) bool { _, ok := m.Load(k); return ok }, func(k string, v float64) { m.Store(k, v) })
	report("syncmap", ops, "ops/s")
}

func rwmap(n int) {
	m := map[string]float64{}
	var mu sync.RWMutex
	ops := mixed(n, func(k string) bool { mu.RLock(); _, ok := m[k]; mu.RUnlock(); return ok },
		func(k string, v float64) { mu.Lock(); m[k] = v; mu.Unlock() })
	report("rwmap", ops, "ops/s")
}

// One hot counter incremented from 2 goroutines, n times each.
func incr(n int) {
	var c int64
	var wg sync.WaitGroup
	t := time.Now()
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			for i := 0; i < n; i++ {
				atomic.AddInt64(&c, 1)
			}
			wg.Done()
		}()
	}
	wg.Wait()
	if c != int64(2*n) {
		panic("lost increments")
	}
	report("incr", float64(time.Since(t).Nanoseconds())/float64(2*n), "ns/op")
}

// n integer keys into one map: the total, and the slowest single insert.
func insert(n int) {
	m := map[int64]float64{}
	var worst time.Duration
	t := time.Now()
	for i := 0; i < n; i++ {
		t0 := time.Now()
		m[int64(i)] = float64(i)
		if d := time.Since(t0); d > worst {
			worst = d
		}
	}
	report("insert", time.Since(t).Seconds()*1e3, "ms")
	report("insert_worst", float64(worst.Nanoseconds())/1e3, "us")
	runtime.KeepAlive(m)
}

// The machine's own stalls: the insert loop's timing with the insert
// replaced by arithmetic of about its cost. A slowest insert near this is
// the machine (a VM's stolen time, interrupts), not the map.
func stall(n int) {
	var worst time.Duration
	x := 0
	for i := 0; i < n; i++ {
		t0 := time.Now()
		for j := 1; j <= 300; j++ {
			x += j * i
		}
		if d := time.Since(t0); d > worst {
			worst = d
		}
	}
	report("stall_worst", float64(worst.Nanoseconds())/1e3, "us")
	runtime.KeepAlive(x)
}

// Memory per entry with n entries: 16-byte string keys, number values.
func bytes(n int) {
	runtime.GC()
	before := rss()
	m := make(map[string]float64)
	for i := 0; i < n; i++ {
		m[fmt.Sprintf("key-%012d", i)] = float64(i)
	}
	runtime.GC()
	report("bytes", float64(rss()-before)/float64(n), "B/entry")
	runtime.KeepAlive(m)
}

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	switch os.Args[1] {
	case "syncmap":
		syncmap(n)
	case "rwmap":
		rwmap(n)
	case "incr":
		incr(n)
	case "insert":
		insert(n)
	case "bytes":
		bytes(n)
	case "stall":
		stall(n)
	}
}
