package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"

	"github.com/navarch/navarch/node/sim"
)

func runSim(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("navarch sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := sim.DefaultConfig(1)
	nodes := fs.Int("nodes", 1, "number of hollow nodes")
	prefix := fs.String("prefix", def.Prefix, "node name prefix (nodes are PREFIX0, PREFIX1, ...)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server (default: $KUBECONFIG, then "+DefaultKubeconfigPath+")")
	cpu := fs.String("cpu", def.CPU.String(), "cpu capacity of each node")
	memory := fs.String("memory", def.Memory.String(), "memory capacity of each node")
	pods := fs.Int64("pods", def.Pods, "pod capacity of each node")
	qps := fs.Float64("qps", 5000, "client requests per second")
	leaseDuration := fs.String("lease-duration", def.LeaseDuration.String(), "lease duration the nodes announce; they renew at a quarter of it")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	cfg := sim.DefaultConfig(*nodes)
	cfg.Prefix, cfg.Pods = *prefix, *pods
	var err error
	if cfg.LeaseDuration, err = time.ParseDuration(*leaseDuration); err != nil || cfg.LeaseDuration < time.Second {
		fmt.Fprintf(stderr, "navarch sim: --lease-duration %q is not a duration of at least 1s\n", *leaseDuration)
		return 2
	}
	if cfg.CPU, err = resource.ParseQuantity(*cpu); err != nil {
		fmt.Fprintf(stderr, "navarch sim: --cpu %q: %v\n", *cpu, err)
		return 2
	}
	if cfg.Memory, err = resource.ParseQuantity(*memory); err != nil {
		fmt.Fprintf(stderr, "navarch sim: --memory %q: %v\n", *memory, err)
		return 2
	}
	if *nodes < 1 {
		fmt.Fprintln(stderr, "navarch sim: --nodes must be at least 1")
		return 2
	}
	restCfg, err := clientConfig(*kubeconfig)
	if err != nil {
		return exitOnError(stderr, err)
	}
	restCfg.QPS, restCfg.Burst = float32(*qps), int(2**qps)
	restCfg.UserAgent = "navarch-sim"
	// Hollow nodes watch pods and nodes: protobuf is far cheaper to decode.
	restCfg.ContentType = "application/vnd.kubernetes.protobuf"
	restCfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return exitOnError(stderr, err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.Info("starting hollow nodes", "nodes", *nodes, "server", restCfg.Host)
	return exitOnError(stderr, sim.New(client, cfg).Run(ctx))
}
