// Package kubelet owns the node agent's kubelet core: it registers the Node
// and keeps its status and Lease fresh, and converges the pods bound to the
// node into running containers. It is a client of the API through client-go
// and of the container runtime through CRI gRPC only (k8s.io/cri-api's
// RuntimeServiceClient and ImageServiceClient), so any CRI runtime serves it:
// the built-in one (node/runtime, wired by builtin.go) or containerd.
//
// The kubelet keeps no state of its own that matters across restarts: what
// runs is read back from the runtime, whose sandboxes and containers carry the
// pod's uid and the container's name as labels and the restart count as the
// container's attempt. A restarted kubelet therefore re-adopts running pods
// instead of restarting them. Only crash-loop back-off timers live in memory.
//
// Each pod has a worker goroutine (as upstream's pod workers) that runs
// syncPod whenever the pod changes in the API, the relist (the PLEG of
// upstream) sees a container change state, or a back-off expires; long waits
// (an image pull, a graceful stop) hold up only that pod.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Labels and annotations the kubelet puts on sandboxes and containers, with
// upstream's names so that crictl and other tools read them.
const (
	labelPodUID                = "io.kubernetes.pod.uid"
	labelPodName               = "io.kubernetes.pod.name"
	labelPodNamespace          = "io.kubernetes.pod.namespace"
	labelContainerName         = "io.kubernetes.container.name"
	annotationRestartCount     = "io.kubernetes.container.restartCount"
	annotationTerminationGrace = "io.kubernetes.pod.terminationGracePeriod"
)

// Config is what the kubelet needs from the agent.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	// DataDir holds pod directories (DATA_DIR/pods/<uid>: logs, volumes)
	// and is the filesystem whose size is the node's ephemeral-storage.
	DataDir string
	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient
	// DefaultPodCIDR is used when the Node has no spec.podCIDR (no node IPAM
	// controller runs) once PodCIDRWait has passed.
	DefaultPodCIDR string
	PodCIDRWait    time.Duration
	// OnPodCIDR is called once with the pod CIDR in use, before any pod
	// runs: the agent writes the CNI configuration from it.
	OnPodCIDR func(cidr string) error
	// NodeIP is the node's InternalIP; "" picks the address of the
	// interface of the default route.
	NodeIP string
	// KubeletPort is the port of the kubelet's HTTPS server (Server),
	// published as the Node's status.daemonEndpoints.kubeletEndpoint; 0:
	// none runs.
	KubeletPort int32
	// ClusterDNS and ClusterDomain configure pods of dnsPolicy
	// ClusterFirst; without ClusterDNS such pods get the node's resolver,
	// as upstream's kubelet does without --cluster-dns.
	ClusterDNS    []string
	ClusterDomain string
	// Version is the kubelet version reported in nodeInfo.
	Version string
	// LeaseDuration is announced in the node's Lease (default 40 s); it is
	// renewed every LeaseRenew (default 10 s).
	LeaseDuration time.Duration
	LeaseRenew    time.Duration
	// StatusInterval is the longest time between node status updates
	// (default 1 min); changes are posted at the next lease renewal.
	StatusInterval time.Duration
	// RelistInterval is how often container states are read back from the
	// runtime to notice exits (default 1 s).
	RelistInterval time.Duration
	// BackoffInitial is the first crash-loop and image-pull back-off
	// (default 10 s, upstream's); it doubles up to 5 min.
	BackoffInitial time.Duration
	// Image garbage collection (upstream's defaults: every 5 min, from 85%
	// of the image filesystem down to 80%, images at least 2 min old).
	ImageGCInterval             time.Duration
	ImageGCHighThresholdPercent int
	ImageGCLowThresholdPercent  int
	ImageMinAge                 time.Duration
	// CgroupRoot is the cgroup (v1 path) under which the QoS and pod
	// cgroups go (ROOT/kubepods/...), "/" by default as upstream's
	// --cgroup-root.
	CgroupRoot string
	// NoPodCgroups leaves containers under the runtime's own cgroup
	// parent, as upstream's --cgroups-per-qos=false.
	NoPodCgroups bool
	// PodMaxPids is each pod's pids.max (upstream's --pod-max-pids); -1 or
	// 0 is unlimited.
	PodMaxPids int64
}

// Kubelet runs the pods bound to one node.
type Kubelet struct {
	cfg    Config
	client kubernetes.Interface
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient

	// Set by Run before any pod is synced.
	runCtx      context.Context
	runtimeName string
	nodeIP      string
	podCIDR     string

	mu      sync.Mutex
	pods    map[types.UID]*corev1.Pod
	workers map[types.UID]chan struct{}
	// backoff holds crash-loop and image-pull back-offs by pod uid and
	// container name.
	backoff map[string]*backoff
	// waiting holds why a container could not be started (ErrImagePull,
	// CreateContainerError ...), reported as its waiting reason.
	waiting map[string]waitReason
	// seen is the relist's last view of container states.
	seen map[string]runtimeapi.ContainerState
	// probes are the running probe workers, probeResults their verdicts by
	// container id.
	probes       map[probeKey]probeWorker
	probeResults map[string]probeResult
	// events queues Events for sendEvents.
	events chan event
	// services lists Services for the containers' service env vars.
	services corelisters.ServiceLister
	// imageFirstSeen and imageLastUsed order images for garbage collection.
	imageFirstSeen, imageLastUsed map[string]time.Time
	// cgroups makes the QoS and pod cgroups (nil: none, containers go
	// under the runtime's parent); memoryCapacity weighs Burstable
	// containers' oom_score_adj. Both are set by Run.
	cgroups        *cgroupManager
	memoryCapacity int64
	// tokens holds the service account tokens of projected volumes.
	tokens *tokenManager
}

type backoff struct {
	delay time.Duration
	last  time.Time // of the last failed image pull
}

type waitReason struct {
	reason, message string
}

// New checks cfg and fills its defaults.
func New(cfg Config) (*Kubelet, error) {
	if cfg.Client == nil || cfg.Runtime == nil || cfg.Images == nil {
		return nil, errors.New("kubelet: needs an API client and CRI runtime and image clients")
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("kubelet: node name: %w", err)
		}
		cfg.NodeName = h
	}
	if cfg.DataDir == "" {
		return nil, errors.New("kubelet: no data directory")
	}
	if cfg.DefaultPodCIDR == "" {
		cfg.DefaultPodCIDR = "10.42.0.0/24"
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = 40 * time.Second
	}
	if cfg.LeaseRenew == 0 {
		cfg.LeaseRenew = 10 * time.Second
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = time.Minute
	}
	if cfg.BackoffInitial == 0 {
		cfg.BackoffInitial = 10 * time.Second
	}
	if cfg.ImageGCInterval == 0 {
		cfg.ImageGCInterval = 5 * time.Minute
	}
	if cfg.ImageGCHighThresholdPercent == 0 {
		cfg.ImageGCHighThresholdPercent = 85
	}
	if cfg.ImageGCLowThresholdPercent == 0 {
		cfg.ImageGCLowThresholdPercent = 80
	}
	if cfg.ImageMinAge == 0 {
		cfg.ImageMinAge = 2 * time.Minute
	}
	if cfg.RelistInterval == 0 {
		cfg.RelistInterval = time.Second
	}
	return &Kubelet{
		cfg: cfg, client: cfg.Client, rt: cfg.Runtime, img: cfg.Images,
		pods: map[types.UID]*corev1.Pod{}, workers: map[types.UID]chan struct{}{},
		backoff: map[string]*backoff{}, waiting: map[string]waitReason{},
		seen:   map[string]runtimeapi.ContainerState{},
		probes: map[probeKey]probeWorker{}, probeResults: map[string]probeResult{},
		events:         make(chan event, 1000),
		imageFirstSeen: map[string]time.Time{}, imageLastUsed: map[string]time.Time{},
		tokens: newTokenManager(cfg.Client),
	}, nil
}

// Run registers the node and runs its pods until ctx ends. Stopping leaves
// the containers running: the next Run re-adopts them.
func (k *Kubelet) Run(ctx context.Context) error {
	err := k.run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (k *Kubelet) run(ctx context.Context) error {
	k.runCtx = ctx
	v, err := k.rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("kubelet: container runtime: %w", err)
	}
	k.runtimeName = v.GetRuntimeName()
	k.memoryCapacity = memTotal()
	if err := k.setupCgroups(ctx); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	if k.nodeIP, err = nodeIP(k.cfg.NodeIP); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	node, err := k.registerNode(ctx, v)
	if err != nil {
		return err
	}
	k.podCIDR = node.Spec.PodCIDR
	if k.podCIDR == "" {
		k.podCIDR = k.cfg.DefaultPodCIDR
	}
	if k.cfg.OnPodCIDR != nil {
		if err := k.cfg.OnPodCIDR(k.podCIDR); err != nil {
			return fmt.Errorf("kubelet: pod CIDR %s: %w", k.podCIDR, err)
		}
	}
	slog.Info("kubelet registered node", "node", k.cfg.NodeName, "podCIDR", k.podCIDR, "ip", k.nodeIP, "runtime", k.runtimeName+"://"+v.GetRuntimeVersion())
	go k.heartbeat(ctx, v)
	go k.sendEvents(ctx)
	go k.imageGCLoop(ctx)

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(ctx, o, false) },
		UpdateFunc: func(_, o any) { k.podChanged(ctx, o, false) },
		DeleteFunc: func(o any) { k.podChanged(ctx, o, true) },
	})
	if err != nil {
		return fmt.Errorf("kubelet: pod informer: %w", err)
	}
	// Services of every namespace, without the pods' node selector.
	svcFactory := informers.NewSharedInformerFactory(k.client, 0)
	svcInf := svcFactory.Core().V1().Services()
	k.services = svcInf.Lister()
	svcFactory.Start(ctx.Done())
	defer svcFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced) {
		return nil
	}
	factory.Start(ctx.Done())
	// The handler's sync, not only the store's: k.pods must hold every pod
	// of the initial list before the relist takes a sandbox without a known
	// pod for an orphan and removes it.
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return nil
	}
	k.cleanupOrphans()
	ticker := time.NewTicker(k.cfg.RelistInterval)
	defer ticker.Stop()
	for {
		k.relist(ctx)
		select {
		case <-ctx.Done():
			factory.Shutdown()
			return nil
		case <-ticker.C:
		}
	}
}

func (k *Kubelet) podChanged(ctx context.Context, o any, deleted bool) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	if deleted {
		delete(k.pods, pod.UID)
	} else {
		k.pods[pod.UID] = pod
	}
	k.mu.Unlock()
	k.enqueue(pod.UID)
}

// relist reads every container's state back from the runtime and wakes the
// workers of pods whose containers changed, and of sandboxes whose pod is no
// longer bound here (they are torn down).
func (k *Kubelet) relist(ctx context.Context) {
	sbs, err := k.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		slog.Warn("kubelet relist failed", "err", err)
		return
	}
	cs, err := k.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		slog.Warn("kubelet relist failed", "err", err)
		return
	}
	wake := map[types.UID]bool{}
	k.mu.Lock()
	for _, sb := range sbs.GetItems() {
		uid := types.UID(sb.GetLabels()[labelPodUID])
		if _, known := k.pods[uid]; !known && uid != "" {
			wake[uid] = true
		}
	}
	now := map[string]runtimeapi.ContainerState{}
	for _, c := range cs.GetContainers() {
		now[c.GetId()] = c.GetState()
		if prev, ok := k.seen[c.GetId()]; !ok || prev != c.GetState() {
			if uid := c.GetLabels()[labelPodUID]; uid != "" {
				wake[types.UID(uid)] = true
			}
		}
	}
	k.seen = now
	k.mu.Unlock()
	for uid := range wake {
		k.enqueue(uid)
	}
}

// enqueue wakes uid's worker, starting one if it has none. Workers live as
// long as Run, whoever wakes them (a probe's goroutine has a shorter life).
func (k *Kubelet) enqueue(uid types.UID) {
	k.mu.Lock()
	ch, ok := k.workers[uid]
	if !ok {
		ch = make(chan struct{}, 1)
		k.workers[uid] = ch
		go k.work(k.runCtx, uid, ch)
	}
	k.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

// work syncs one pod each time it is woken, or when the sync asked to be
// called again; it ends once the pod is gone from the API and the node.
func (k *Kubelet) work(ctx context.Context, uid types.UID, kick chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-timer.C:
		}
		k.mu.Lock()
		pod := k.pods[uid]
		k.mu.Unlock()
		again, done := k.syncPod(ctx, uid, pod)
		if done {
			k.mu.Lock()
			if _, back := k.pods[uid]; !back && len(kick) == 0 {
				delete(k.workers, uid)
				k.forget(uid)
				k.mu.Unlock()
				return
			}
			k.mu.Unlock()
			continue
		}
		timer.Stop()
		if again > 0 {
			timer.Reset(again)
		}
	}
}

// forget drops the in-memory state of a pod that is gone; k.mu is held.
func (k *Kubelet) forget(uid types.UID) {
	prefix := string(uid) + "/"
	for key := range k.backoff {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix {
			delete(k.backoff, key)
		}
	}
	for key := range k.waiting {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix {
			delete(k.waiting, key)
		}
	}
	k.tokens.forget(uid)
}

// podDir is DATA_DIR/pods/<uid>, removed with the pod.
func (k *Kubelet) podDir(uid types.UID) string {
	return filepath.Join(k.cfg.DataDir, "pods", string(uid))
}
