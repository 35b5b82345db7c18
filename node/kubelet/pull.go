package kubelet

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pull pulls spec's image with the pod's imagePullSecrets: each credential
// for the image's registry is tried in turn, then an anonymous pull, as
// upstream's kubelet does.
func (k *Kubelet) pull(ctx context.Context, pod *corev1.Pod, spec *runtimeapi.ImageSpec) (string, error) {
	var firstErr error
	for _, auth := range k.pullCredentials(ctx, pod, spec.GetImage()) {
		resp, err := k.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec, Auth: auth})
		if err == nil {
			return resp.GetImageRef(), nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	resp, err := k.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec})
	if err == nil {
		return resp.GetImageRef(), nil
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", err
}

// dockerConfig is the content of kubernetes.io/dockerconfigjson secrets
// (and, without the "auths" level, of kubernetes.io/dockercfg ones).
type dockerConfig struct {
	Auths map[string]dockerAuth `json:"auths"`
}

type dockerAuth struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// registryHost is the registry of an image reference, docker.io when the
// reference names none.
func registryHost(image string) string {
	first, _, found := strings.Cut(image, "/")
	if !found || !strings.ContainsAny(first, ".:") && first != "localhost" {
		return "docker.io"
	}
	return first
}

// matchRegistry reports whether a docker config key names host.
func matchRegistry(key, host string) bool {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	if host == "docker.io" && (key == "index.docker.io" || key == "registry-1.docker.io") {
		return true
	}
	return key == host
}

func (k *Kubelet) pullCredentials(ctx context.Context, pod *corev1.Pod, image string) []*runtimeapi.AuthConfig {
	host := registryHost(image)
	var out []*runtimeapi.AuthConfig
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		var auths map[string]dockerAuth
		if b, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
			var cfg dockerConfig
			if json.Unmarshal(b, &cfg) == nil {
				auths = cfg.Auths
			}
		} else if b, ok := s.Data[corev1.DockerConfigKey]; ok {
			_ = json.Unmarshal(b, &auths)
		}
		for key, a := range auths {
			if !matchRegistry(key, host) {
				continue
			}
			if a.Username == "" && a.Auth != "" {
				if raw, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
					a.Username, a.Password, _ = strings.Cut(string(raw), ":")
				}
			}
			out = append(out, &runtimeapi.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth,
				ServerAddress: key, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
		}
	}
	return out
}
