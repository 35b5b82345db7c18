// Package controlplane wires together everything `navarch server` runs: the
// state store (embedded etcd or an external cluster), the API server, the
// start-up objects and the controllers. Each part is started in order here
// and nowhere else; a failure of any part stops the whole server.
package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/navarch/navarch/controlplane/admission/defaulttolerationseconds"
	"github.com/navarch/navarch/controlplane/admission/priority"
	serviceaccountadmission "github.com/navarch/navarch/controlplane/admission/serviceaccount"
	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/apiserver/openapi"
	"github.com/navarch/navarch/controlplane/bootstrap"
	"github.com/navarch/navarch/controlplane/controllers/cronjob"
	"github.com/navarch/navarch/controlplane/controllers/daemonset"
	"github.com/navarch/navarch/controlplane/controllers/deployment"
	"github.com/navarch/navarch/controlplane/controllers/endpoints"
	"github.com/navarch/navarch/controlplane/controllers/garbagecollector"
	"github.com/navarch/navarch/controlplane/controllers/job"
	"github.com/navarch/navarch/controlplane/controllers/namespace"
	"github.com/navarch/navarch/controlplane/controllers/nodeipam"
	"github.com/navarch/navarch/controlplane/controllers/nodelifecycle"
	"github.com/navarch/navarch/controlplane/controllers/podgc"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/controllers/rootcacert"
	"github.com/navarch/navarch/controlplane/controllers/serviceaccount"
	"github.com/navarch/navarch/controlplane/controllers/serviceaccounttoken"
	"github.com/navarch/navarch/controlplane/controllers/statefulset"
	"github.com/navarch/navarch/controlplane/controllers/tainteviction"
	"github.com/navarch/navarch/controlplane/controllers/ttlafterfinished"
	"github.com/navarch/navarch/controlplane/leaderlock"
	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/apps"
	"github.com/navarch/navarch/controlplane/registry/batch"
	"github.com/navarch/navarch/controlplane/registry/core"
	"github.com/navarch/navarch/controlplane/registry/others"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/controlplane/servicealloc"
	"github.com/navarch/navarch/controlplane/storage/etcd"
	"github.com/navarch/navarch/internal/pki"
)

// Config is what `navarch server` is told by its flags.
type Config struct {
	DataDir            string
	BindAddress        string
	AdvertiseAddress   string // the address in the kubernetes Service's endpoints; default: a host address
	SecurePort         int
	WriteKubeconfig    string
	EtcdServers        []string
	ServiceCIDR        string
	NodePortBase       int
	NodePortSize       int
	CompactionInterval time.Duration
	Version            version.Info

	// Node health, pod CIDRs, pod GC and default tolerations; zero
	// durations and an empty CIDR mean upstream's defaults.
	NodeMonitorGracePeriod              time.Duration
	NodeMonitorPeriod                   time.Duration
	ClusterCIDR                         string
	NodeCIDRMaskSize                    int
	TerminatedPodGCThreshold            int // <= 0 keeps every terminated pod
	DefaultNotReadyTolerationSeconds    int64
	DefaultUnreachableTolerationSeconds int64
}

// Resources is every resource the API server serves, in discovery order.
func Resources() []*registry.Resource {
	var all []*registry.Resource
	for _, group := range [][]*registry.Resource{core.Resources(), apps.Resources(), batch.Resources(), others.Resources()} {
		all = append(all, group...)
	}
	return all
}

// Run runs the control plane until ctx ends, then stops it in order.
func Run(ctx context.Context, cfg Config) error {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	host := cfg.BindAddress
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	hosts := []string{host}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	// Agents on other machines reach the server at its advertised address:
	// the serving certificate must name it too.
	advertise := cfg.AdvertiseAddress
	if advertise == "" {
		advertise = hostAddress(host)
	}
	if advertise != host {
		hosts = append(hosts, advertise)
	}
	certs, err := pki.Ensure(filepath.Join(cfg.DataDir, "pki"), hosts)
	if err != nil {
		return err
	}
	saKey, err := pki.EnsureServiceAccountKey(filepath.Join(cfg.DataDir, "pki"))
	if err != nil {
		return err
	}
	saTokens, err := apiserver.NewServiceAccountTokens(saKey, "", nil)
	if err != nil {
		return err
	}

	// State store.
	var client *clientv3.Client
	fatal := make(chan error, 4)
	if len(cfg.EtcdServers) > 0 {
		if client, err = etcd.Dial(cfg.EtcdServers); err != nil {
			return err
		}
		defer client.Close()
	} else {
		member, err := etcd.StartEmbedded(ctx, filepath.Join(cfg.DataDir, "etcd"))
		if err != nil {
			return err
		}
		defer member.Close()
		client = member.Client
		go func() {
			if err := <-member.Err(); err != nil {
				fatal <- fmt.Errorf("embedded etcd: %w", err)
			}
		}()
	}
	store := etcd.NewStore(client)

	// API server.
	resources := Resources()
	docs := openapi.NewLazy(resources)
	alloc, err := servicealloc.New(store, cfg.ServiceCIDR, cfg.NodePortBase, cfg.NodePortSize)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(cfg.SecurePort))
	api, err := apiserver.New(apiserver.Config{
		Store:              store,
		Resources:          resources,
		Authenticators:     []apiserver.Authenticator{apiserver.ClientCertAuthenticator{}, apiserver.NewNodeTokenAuthenticator(filepath.Join(cfg.DataDir, "node-token")), saTokens},
		Version:            cfg.Version,
		ServerAddress:      addr,
		OpenAPIV2:          docs.ServeV2,
		OpenAPIV3:          docs.ServeV3,
		Hooks:              map[string]apiserver.WriteHooks{"/services": alloc}, // core group: "" + "/" + resource
		CompactionInterval: cfg.CompactionInterval,
		// Mutating admission steps, in upstream's order.
		Admission: []apiserver.Admitter{serviceaccountadmission.New(), priority.New(), defaulttolerationseconds.New(cfg.DefaultNotReadyTolerationSeconds, cfg.DefaultUnreachableTolerationSeconds)},
		// pods/log presents this to kubelets.
		KubeletClientCertPEM: certs.KubeletClientCertPEM, KubeletClientKeyPEM: certs.KubeletClientKeyPEM,
	})
	if err != nil {
		return err
	}
	if err := api.Start(ctx); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.SecurePort)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler: api.Handler(),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{certs.Serving},
			ClientCAs:    certs.ClientCAs(),
			ClientAuth:   tls.VerifyClientCertIfGiven,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          nil,
	}
	go func() {
		if err := srv.ServeTLS(listener, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal <- fmt.Errorf("serve: %w", err)
		}
	}()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
	}()

	if err := bootstrap.Run(ctx, api, bootstrap.Config{ClusterIP: alloc.FirstIP(), EndpointIP: advertise, SecurePort: int32(cfg.SecurePort)}); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: not a failure
		}
		return err
	}
	serverURL := "https://" + addr
	if err := pki.WriteKubeconfig(cfg.WriteKubeconfig, serverURL, certs.CACertPEM, certs.AdminCertPEM, certs.AdminKeyPEM); err != nil {
		return err
	}
	api.MarkReady()
	slog.Info("api server ready", "url", serverURL, "kubeconfig", cfg.WriteKubeconfig, "startup", time.Since(start).Round(time.Millisecond))

	// Controllers, as clients of the API server.
	restCfg := &rest.Config{
		Host: serverURL, QPS: 1000, Burst: 2000, UserAgent: "navarch-controller-manager",
		TLSClientConfig: rest.TLSClientConfig{CAData: certs.CACertPEM, CertData: certs.AdminCertPEM, KeyData: certs.AdminKeyPEM},
		// Protobuf is much cheaper to decode than JSON for the informers'
		// watch events; the dynamic client (garbage collector, namespace
		// controller) forces JSON on its own copy of this config.
		ContentConfig: rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf", AcceptContentTypes: "application/vnd.kubernetes.protobuf,application/json"},
	}
	// One informer cache for every controller, as upstream's controller
	// manager has: each object is held once however many controllers watch it.
	kube := kubernetes.NewForConfigOrDie(restCfg)
	factory := informers.NewSharedInformerFactory(kube, 0)
	defer factory.Shutdown()
	nsController, err := namespace.New(restCfg, factory)
	if err != nil {
		return err
	}
	if cfg.ClusterCIDR == "" {
		cfg.ClusterCIDR, cfg.NodeCIDRMaskSize = nodeipam.DefaultClusterCIDR, nodeipam.DefaultMaskSize
	}
	ipam, err := nodeipam.New(kube, factory, cfg.ClusterCIDR, cfg.NodeCIDRMaskSize)
	if err != nil {
		return err
	}
	schedCfg := rest.CopyConfig(restCfg)
	schedCfg.UserAgent = "navarch-scheduler"
	sched := scheduler.NewShared(kubernetes.NewForConfigOrDie(schedCfg), factory)
	// The controller manager's controllers, run only while this server holds
	// the kube-controller-manager Lease, as upstream's; the scheduler has
	// a Lease of its own.
	controllers := map[string]func(context.Context) error{
		"namespace controller":      nsController.Run,
		"replicaset controller":     replicaset.New(kube, factory).Run,
		"deployment controller":     deployment.New(kube, factory).Run,
		"daemonset controller":      daemonset.New(kube, factory).Run,
		"garbage collector":         garbagecollector.New(kube, dynamic.NewForConfigOrDie(restCfg), factory).Run,
		"serviceaccount controller": serviceaccount.New(kube, factory).Run,
		"root-ca-cert-publisher":    rootcacert.New(kube, factory, certs.CACertPEM).Run,
		"serviceaccount-token":      serviceaccounttoken.New(kube, factory, saTokens, certs.CACertPEM).Run,
		"endpoints controller":      endpoints.New(kube, factory).Run,
		"nodelifecycle controller":  nodelifecycle.New(kube, factory, nodelifecycle.Config{GracePeriod: cfg.NodeMonitorGracePeriod, MonitorPeriod: cfg.NodeMonitorPeriod}).Run,
		"taint eviction controller": tainteviction.New(kube, factory, nil).Run,
		"nodeipam controller":       ipam.Run,
		"pod garbage collector":     podgc.New(kube, factory, podgc.Config{TerminatedThreshold: cfg.TerminatedPodGCThreshold}).Run,
		"statefulset controller":    statefulset.New(kube, factory).Run,
		"job controller":            job.New(kube, factory).Run,
		"cronjob controller":        cronjob.New(kube, factory).Run,
		"ttl-after-finished":        ttlafterfinished.New(kube, factory).Run,
	}
	manager := func(ctx context.Context) error {
		errs := make(chan error, len(controllers))
		for name, run := range controllers {
			go func() {
				if err := run(ctx); err != nil && ctx.Err() == nil {
					errs <- fmt.Errorf("%s: %w", name, err)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		}
	}
	// On the way out the components stop before the API server does
	// (deferred calls run last first), so that they release their Leases
	// and a restarted server leads at once instead of after their expiry.
	var components sync.WaitGroup
	defer func() {
		cancel()
		done := make(chan struct{})
		go func() { components.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			slog.Warn("components did not stop within 5s")
		}
	}()
	for name, run := range map[string]func(context.Context) error{
		"scheduler":          sched.Run,
		"controller manager": func(ctx context.Context) error { return leaderlock.Run(ctx, kube, "kube-controller-manager", manager) },
	} {
		components.Add(1)
		go func() {
			defer components.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				fatal <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	// Start-up leaves garbage behind (type registration, certificates,
	// bootstrap writes) that the runtime would return to the system only
	// slowly; give it back once the controllers have synced.
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
			debug.FreeOSMemory()
		}
	}()

	select {
	case <-ctx.Done():
		slog.Info("shutting down")
		return nil
	case err := <-fatal:
		return err
	}
}

// hostAddress picks the address the kubernetes Service points at when none is
// given: the first global unicast IPv4 address of the host, as upstream's
// advertise address defaults to; fallback when the host has none.
func hostAddress(fallback string) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fallback
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			return ipn.IP.String()
		}
	}
	return fallback
}
