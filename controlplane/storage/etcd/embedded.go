package etcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Embedded is an etcd member running inside the server's process, reached
// through an in-process client (no network hop on the hot path).
type Embedded struct {
	etcd   *embed.Etcd
	Client *clientv3.Client
}

// StartEmbedded starts a single-member etcd cluster with its data in dir and
// waits until it serves. The server talks to it in-process; its listeners are
// on free loopback ports, which only etcdctl-style debugging uses.
func StartEmbedded(ctx context.Context, dir string) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "navarch"
	cfg.Dir = dir
	// etcd logs its own shutdown as errors; only fatal problems are worth showing.
	cfg.LogLevel = "fatal"
	ports, err := freePorts(2)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	// A lone member elects itself at once; short ticks make that quick.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	// Fewer entries kept in memory between snapshots bounds the member's memory.
	cfg.SnapshotCount = 10000
	cfg.SnapshotCatchUpEntries = 1000
	cfg.ExperimentalSnapshotCatchUpEntries = 1000
	cfg.QuotaBackendBytes = 8 << 30

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready after 60s", dir)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Embedded{etcd: e, Client: v3client.New(e.Server)}, nil
}

// Err reports a fatal error of the member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member after flushing what it acknowledged.
func (e *Embedded) Close() {
	e.Client.Close()
	e.etcd.Close()
}

// Dial connects to an external etcd cluster.
func Dial(endpoints []string) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	return c, nil
}

// freePorts asks the kernel for n unused loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
