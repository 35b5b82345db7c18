package kubelet

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// This file materialises the API-backed volumes (configMap, secret,
// downwardAPI, projected) as directories of files, in upstream's layout so
// that an update is atomic for readers: the files live in a timestamped
// directory, "..data" is a symlink to it, and each top-level entry is a
// symlink through "..data". An update writes a new directory and swaps the
// "..data" link with one rename.

// volumeFile is one file of a volume: its path inside the volume, content
// and mode.
type volumeFile struct {
	path string
	data []byte
	mode os.FileMode
}

func modeOr(m *int32, def int32) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return os.FileMode(def)
}

// keyFiles maps data by items (all keys, sorted, when items is empty).
func keyFiles(kind, name string, data map[string][]byte, items []corev1.KeyToPath, defMode int32, optional bool) ([]volumeFile, error) {
	var out []volumeFile
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out = append(out, volumeFile{path: k, data: data[k], mode: os.FileMode(defMode)})
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%s %q has no key %q", kind, name, it.Key)
		}
		out = append(out, volumeFile{path: it.Path, data: v, mode: modeOr(it.Mode, defMode)})
	}
	return out, nil
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data
}

func (k *Kubelet) configMapFiles(ctx context.Context, ns string, src *corev1.ConfigMapVolumeSource, defMode int32) ([]volumeFile, error) {
	optional := src.Optional != nil && *src.Optional
	cm, err := k.client.CoreV1().ConfigMaps(ns).Get(ctx, src.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %q: %w", src.Name, err)
	}
	return keyFiles("configmap", src.Name, configMapData(cm), src.Items, defMode, optional)
}

func (k *Kubelet) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional bool, defMode int32) ([]volumeFile, error) {
	s, err := k.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range s.Data {
		data[k] = v
	}
	for k, v := range s.StringData {
		data[k] = []byte(v)
	}
	return keyFiles("secret", name, data, items, defMode, optional)
}

// formatMap writes labels or annotations as upstream's downward API does:
// key="value" lines, sorted, values quoted.
func formatMap(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%s", k, strconv.Quote(m[k]))
	}
	return b.Bytes()
}

func (k *Kubelet) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, defMode int32) ([]volumeFile, error) {
	var out []volumeFile
	for _, it := range items {
		var data []byte
		switch {
		case it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.labels":
			data = formatMap(pod.Labels)
		case it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.annotations":
			data = formatMap(pod.Annotations)
		case it.FieldRef != nil:
			v, err := k.fieldValue(pod, it.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			data = []byte(v)
		case it.ResourceFieldRef != nil:
			c := containerNamed(pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return nil, fmt.Errorf("downward API file %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName)
			}
			v, err := resourceValue(c, it.ResourceFieldRef)
			if err != nil {
				return nil, err
			}
			data = []byte(v)
		}
		out = append(out, volumeFile{path: it.Path, data: data, mode: modeOr(it.Mode, defMode)})
	}
	return out, nil
}

func containerNamed(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name || name == "" && i == 0 {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// rootCAConfigMap is the ConfigMap of the cluster CA in every namespace,
// part of every pod's service account token volume.
const rootCAConfigMap = "kube-root-ca.crt"

// apiVolumeFiles returns the files of an API-backed volume; ok is false for
// other volume types.
func (k *Kubelet) apiVolumeFiles(ctx context.Context, pod *corev1.Pod, v *corev1.Volume) (files []volumeFile, kind string, ok bool, err error) {
	switch {
	case v.ConfigMap != nil:
		files, err = k.configMapFiles(ctx, pod.Namespace, v.ConfigMap, ptrOr(v.ConfigMap.DefaultMode, corev1.ConfigMapVolumeSourceDefaultMode))
		return files, "kubernetes.io~configmap", true, err
	case v.Secret != nil:
		files, err = k.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional != nil && *v.Secret.Optional,
			ptrOr(v.Secret.DefaultMode, corev1.SecretVolumeSourceDefaultMode))
		return files, "kubernetes.io~secret", true, err
	case v.DownwardAPI != nil:
		files, err = k.downwardFiles(pod, v.DownwardAPI.Items, ptrOr(v.DownwardAPI.DefaultMode, corev1.DownwardAPIVolumeSourceDefaultMode))
		return files, "kubernetes.io~downward-api", true, err
	case v.Projected != nil:
		def := ptrOr(v.Projected.DefaultMode, corev1.ProjectedVolumeSourceDefaultMode)
		for _, src := range v.Projected.Sources {
			var part []volumeFile
			switch {
			case src.ConfigMap != nil && src.ConfigMap.Name == rootCAConfigMap:
				// Made by the control plane for every namespace, maybe
				// not yet for a brand-new one.
				err = waitForSystemObject(ctx, func() (err error) {
					part, err = k.configMapFiles(ctx, pod.Namespace, &corev1.ConfigMapVolumeSource{LocalObjectReference: src.ConfigMap.LocalObjectReference,
						Items: src.ConfigMap.Items, Optional: src.ConfigMap.Optional}, def)
					return err
				})
			case src.ConfigMap != nil:
				part, err = k.configMapFiles(ctx, pod.Namespace, &corev1.ConfigMapVolumeSource{LocalObjectReference: src.ConfigMap.LocalObjectReference,
					Items: src.ConfigMap.Items, Optional: src.ConfigMap.Optional}, def)
			case src.Secret != nil:
				part, err = k.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional != nil && *src.Secret.Optional, def)
			case src.DownwardAPI != nil:
				part, err = k.downwardFiles(pod, src.DownwardAPI.Items, def)
			case src.ServiceAccountToken != nil:
				var token []byte
				if token, err = k.tokens.token(ctx, pod, src.ServiceAccountToken); err == nil {
					part = []volumeFile{{path: src.ServiceAccountToken.Path, data: token, mode: os.FileMode(def)}}
				}
			default:
				err = fmt.Errorf("projected volume %q: only configMap, secret, downwardAPI and serviceAccountToken sources are supported yet", v.Name)
			}
			if err != nil {
				return nil, "kubernetes.io~projected", true, err
			}
			files = append(files, part...)
		}
		return files, "kubernetes.io~projected", true, nil
	}
	return nil, "", false, nil
}

func ptrOr(p *int32, def int32) int32 {
	if p != nil {
		return *p
	}
	return def
}

// writeVolume makes dir hold exactly files, atomically, unless it already
// does.
func writeVolume(dir string, files []volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if volumeCurrent(dir, files) {
		return nil
	}
	ts := filepath.Join(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.000000000"))
	if err := os.Mkdir(ts, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		clean := filepath.Clean(f.path)
		if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("volume file path %q escapes the volume", f.path)
		}
		p := filepath.Join(ts, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, f.mode.Perm()); err != nil {
			return err
		}
		// WriteFile honours the umask; the mode asked for is the mode.
		if err := os.Chmod(p, f.mode.Perm()); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	// Top-level entries point through ..data; stale ones go.
	top := map[string]bool{}
	for _, f := range files {
		top[strings.SplitN(filepath.Clean(f.path), "/", 2)[0]] = true
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "..") {
			continue
		}
		if !top[n] {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
	for n := range top {
		link := filepath.Join(dir, n)
		if t, err := os.Readlink(link); err == nil && t == filepath.Join("..data", n) {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", n), link); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(ts) {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

// volumeCurrent reports whether dir's ..data already holds files exactly.
func volumeCurrent(dir string, files []volumeFile) bool {
	data := filepath.Join(dir, "..data")
	if _, err := os.Readlink(data); err != nil {
		return false
	}
	n := 0
	err := filepath.Walk(data+"/", func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return err
	})
	if err != nil || n != len(files) {
		return false
	}
	for _, f := range files {
		p := filepath.Join(data, filepath.Clean(f.path))
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != f.mode.Perm() {
			return false
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.data) {
			return false
		}
	}
	return true
}

// refreshVolumes rewrites the pod's API-backed volumes from the API, which
// propagates updates of configMaps and secrets to running containers, and
// service account tokens the token manager renewed.
func (k *Kubelet) refreshVolumes(ctx context.Context, pod *corev1.Pod) {
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		files, kind, ok, err := k.apiVolumeFiles(ctx, pod, v)
		if !ok {
			continue
		}
		dir := filepath.Join(k.podDir(pod.UID), "volumes", kind, v.Name)
		if _, serr := os.Stat(dir); serr != nil {
			continue // not set up yet: the container's start does it
		}
		if err == nil {
			err = writeVolume(dir, files)
		}
		if err != nil {
			slog.Warn("kubelet cannot refresh volume", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name, "err", err)
		}
	}
}
