package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
)

// relayd -pprof ADDR serves the runtime profiles there, not on the relay's
// listener, and stops serving them when relayd stops.
func TestRunPprof(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "demo.db")
	stderr := newLogBuffer()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"-addr", "127.0.0.1:0", "-db", dbPath, "-pprof", "127.0.0.1:0"}, io.Discard, stderr)
	}()
	logs := stderr.waitFor(t, "relayd: listening")
	prof := regexp.MustCompile(`relayd: serving profiles" addr=(\S+)`).FindStringSubmatch(logs)
	relayAddr := regexp.MustCompile(`relayd: listening" addr=(\S+)`).FindStringSubmatch(logs)
	if prof == nil || relayAddr == nil {
		t.Fatalf("logs:\n%s", logs)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	get := func(url string) int {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("http://" + prof[1] + "/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("profiles: %d", code)
	}
	if code := get("http://" + relayAddr[1] + "/debug/pprof/cmdline"); code == http.StatusOK {
		t.Errorf("the relay's listener serves profiles")
	}
	client.CloseIdleConnections()
	stop()
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	if c, err := net.Dial("tcp", prof[1]); err == nil {
		c.Close()
		t.Errorf("profiles still served after relayd stopped")
	}
}
