package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

type idleConn struct{ welcomed chan struct{} }

func (c *idleConn) OnOpen(*gws.Conn)         {}
func (c *idleConn) OnClose(*gws.Conn, error) {}
func (c *idleConn) OnPing(*gws.Conn, []byte) {}
func (c *idleConn) OnPong(*gws.Conn, []byte) {}
func (c *idleConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	m.Close()
	select {
	case c.welcomed <- struct{}{}:
	default:
	}
}

// runIdle opens n idle connections and returns the server's resident
// memory growth per connection.
func runIdle(url string, pid, n int) (float64, error) {
	if pid == 0 {
		return 0, fmt.Errorf("idle needs --server-pid")
	}
	runtime.GC()
	time.Sleep(time.Second)
	before, err := residentBytes(pid)
	if err != nil {
		return 0, err
	}
	conns := make([]*gws.Conn, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h := &idleConn{welcomed: make(chan struct{}, 1)}
			conn, err := dial(url, fmt.Sprintf("idle%d", i), h)
			if err == nil {
				select {
				case <-h.welcomed:
				case <-time.After(30 * time.Second):
					err = fmt.Errorf("connection %d: no welcome", i)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			conns[i] = conn
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.NetConn().Close()
			}
		}
	}()
	if firstErr != nil {
		return 0, firstErr
	}
	time.Sleep(3 * time.Second) // let the server settle
	after, err := residentBytes(pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(n), nil
}
