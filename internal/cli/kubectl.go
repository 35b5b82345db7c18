package cli

import (
	"fmt"
	"os"
	"strings"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"

	// Only `navarch kubectl` loads kubectl's translations (see the package).
	_ "github.com/navarch/navarch/internal/kubectli18n"
)

// DefaultKubeconfigPath is where `navarch server` writes its admin
// kubeconfig by default, and so where `navarch kubectl` looks first.
const DefaultKubeconfigPath = "/var/lib/navarch/admin.kubeconfig"

// clientConfig reads the kubeconfig a client subcommand (sim, agent) talks
// to the cluster with: the flag's path, else $KUBECONFIG, else the one
// `navarch server` writes by default.
func clientConfig(path string) (*rest.Config, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		path = DefaultKubeconfigPath
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// kubeconfigEnv returns the KUBECONFIG value the bundled kubectl should run
// with: the user's choice when KUBECONFIG or --kubeconfig is given, otherwise
// the server's kubeconfig. ok is false when nothing needs setting.
func kubeconfigEnv(env string, args []string) (value string, ok bool) {
	if env != "" {
		return "", false
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			return "", false
		}
	}
	return DefaultKubeconfigPath, true
}

// RunKubectl runs the bundled kubectl with args (what follows "kubectl").
func RunKubectl(args []string) int {
	if v, ok := kubeconfigEnv(os.Getenv("KUBECONFIG"), args); ok {
		os.Setenv("KUBECONFIG", v)
	}
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	flags := genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300).WithDiscoveryQPS(50.0).WithWarningPrinter(streams)
	cmd := kubectl.NewDefaultKubectlCommandWithArgs(kubectl.KubectlOptions{
		PluginHandler: kubectl.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     append([]string{"kubectl"}, args...),
		ConfigFlags:   flags,
		IOStreams:     streams,
	})
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
