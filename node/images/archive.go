package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Named is an image with the reference it is written under.
type Named struct {
	Ref   string
	Image v1.Image
}

// WriteOCIArchive writes images as an OCI image layout tarball (what Import
// reads; `docker load` and `ctr import` read it too): one index entry per
// reference, with the full reference in org.opencontainers.image.ref.name
// and io.containerd.image.name. Entries carry a fixed time so the same
// images give the same bytes.
func WriteOCIArchive(w io.Writer, images []Named) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	put := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	putBytes := func(name string, b []byte) error { return put(name, int64(len(b)), bytes.NewReader(b)) }
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	written := map[v1.Hash]bool{}
	blob := func(h v1.Hash, b []byte) error {
		if written[h] {
			return nil
		}
		written[h] = true
		return putBytes("blobs/sha256/"+h.Hex, b)
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, n := range images {
		ref, err := Normalize(n.Ref)
		if err != nil {
			return err
		}
		layers, err := n.Image.Layers()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		for _, l := range layers {
			h, err := l.Digest()
			if err != nil {
				return fmt.Errorf("image %s: %w", ref, err)
			}
			if written[h] {
				continue
			}
			written[h] = true
			size, err := l.Size()
			if err != nil {
				return fmt.Errorf("image %s: %w", ref, err)
			}
			rc, err := l.Compressed()
			if err != nil {
				return fmt.Errorf("image %s: %w", ref, err)
			}
			err = put("blobs/sha256/"+h.Hex, size, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("image %s: %w", ref, err)
			}
		}
		cfgName, err := n.Image.ConfigName()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		cfg, err := n.Image.RawConfigFile()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if err := blob(cfgName, cfg); err != nil {
			return err
		}
		raw, err := n.Image.RawManifest()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		h, err := n.Image.Digest()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		mt, err := n.Image.MediaType()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if err := blob(h, raw); err != nil {
			return err
		}
		idx.Manifests = append(idx.Manifests, v1.Descriptor{
			MediaType: mt, Size: int64(len(raw)), Digest: h,
			Annotations: map[string]string{refAnnotation: ref, "io.containerd.image.name": ref},
		})
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := putBytes("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := putBytes("index.json", ib); err != nil {
		return err
	}
	return tw.Close()
}
