package images

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImportFile imports the images of the tarball at path; see Import.
func (s *Store) ImportFile(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("import %s: is a directory, not an image tarball", file)
	}
	refs, err := s.Import(f)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	return refs, nil
}

// Import reads an image tarball, an OCI image layout or a docker-archive
// (`docker save`), possibly gzip-compressed, holding one or several images,
// and stores its images. It returns the references imported (normalized),
// or the id of an image that has none.
func (s *Store) Import(r io.Reader) ([]string, error) {
	// Both formats need random access: spool the stream into the store's
	// tmp directory, uncompressed, so blobs can be renamed out of it.
	br := bufio.NewReader(r)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("not an image tarball: %w", err)
		}
		defer gz.Close()
		src = gz
	}
	spool, err := os.CreateTemp(filepath.Join(s.root, "tmp"), tempPrefix()+"import-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(spool.Name())
	_, err = io.Copy(spool, src)
	if cerr := spool.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	names, err := tarNames(spool.Name())
	if err != nil {
		return nil, err
	}

	unlock, err := s.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	switch {
	case names["manifest.json"]:
		return s.importDocker(spool.Name())
	case names["index.json"] && names["oci-layout"]:
		return s.importOCI(spool.Name())
	}
	return nil, errors.New("not an image tarball: it has neither manifest.json (docker-archive) nor oci-layout and index.json (OCI layout)")
}

// tarNames lists the regular files of a tar archive.
func tarNames(file string) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a tarball: %w", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			names[strings.TrimPrefix(path.Clean(hdr.Name), "/")] = true
		}
	}
	if len(names) == 0 {
		return nil, errors.New("not an image tarball: no files in it")
	}
	return names, nil
}

// importDocker imports a docker-archive. Callers hold the exclusive lock.
func (s *Store) importDocker(file string) ([]string, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	mf, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("docker-archive manifest.json: %w", err)
	}
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []string
	for i, d := range mf {
		var tag *name.Tag
		if len(d.RepoTags) > 0 {
			t, err := name.NewTag(d.RepoTags[0], name.WeakValidation)
			if err != nil {
				return nil, fmt.Errorf("docker-archive image %d: tag %q: %w", i, d.RepoTags[0], err)
			}
			tag = &t
		} else if len(mf) > 1 {
			return nil, fmt.Errorf("docker-archive image %d: untagged image in an archive of several", i)
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("docker-archive image %d: %w", i, err)
		}
		desc, err := s.writeImage(img)
		if err != nil {
			return nil, fmt.Errorf("docker-archive image %d: %w", i, err)
		}
		var refs []string
		for _, t := range d.RepoTags {
			ref, err := Normalize(t)
			if err != nil {
				return nil, fmt.Errorf("docker-archive image %d: %w", i, err)
			}
			refs = append(refs, ref)
		}
		out = append(out, s.commitAll(idx, refs, desc)...)
	}
	return out, s.writeIndex(idx)
}

// commitAll records desc under each of refs, or untagged when refs is
// empty, and returns what names it: the refs, or the image id.
func (s *Store) commitAll(idx *v1.IndexManifest, refs []string, desc imageDesc) []string {
	if len(refs) == 0 {
		s.commit(idx, "", desc.Descriptor)
		return []string{desc.id}
	}
	for _, ref := range refs {
		s.commit(idx, ref, desc.Descriptor)
	}
	return refs
}

// imageDesc is a stored manifest's descriptor and its image id.
type imageDesc struct {
	v1.Descriptor
	id string
}

// writeImage stores img's layers, config and manifest as blobs.
func (s *Store) writeImage(img v1.Image) (imageDesc, error) {
	layers, err := img.Layers()
	if err != nil {
		return imageDesc{}, err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return imageDesc{}, err
		}
		if s.hasBlob(h) {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return imageDesc{}, fmt.Errorf("layer %s: %w", h, err)
		}
		err = s.writeBlob(h, rc)
		rc.Close()
		if err != nil {
			return imageDesc{}, err
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return imageDesc{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return imageDesc{}, err
	}
	if err := s.writeBlob(cfgName, strings.NewReader(string(cfg))); err != nil {
		return imageDesc{}, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return imageDesc{}, err
	}
	h, err := img.Digest()
	if err != nil {
		return imageDesc{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return imageDesc{}, err
	}
	if err := s.writeBlob(h, strings.NewReader(string(raw))); err != nil {
		return imageDesc{}, err
	}
	return imageDesc{Descriptor: v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: h}, id: cfgName.String()}, nil
}

// importOCI imports an OCI image layout tarball: it is unpacked into tmp/
// and the blobs the images use are verified and renamed into the store.
// Callers hold the exclusive lock.
func (s *Store) importOCI(file string) ([]string, error) {
	dir, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), tempPrefix()+"oci-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := extractFiles(file, dir); err != nil {
		return nil, fmt.Errorf("OCI layout: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("OCI layout: %w", err)
	}
	var layoutIdx v1.IndexManifest
	if err := json.Unmarshal(b, &layoutIdx); err != nil {
		return nil, fmt.Errorf("OCI layout index.json: %w", err)
	}
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []string
	for i, d := range layoutIdx.Manifests {
		md, err := pickManifest(dir, d)
		if err != nil {
			return nil, fmt.Errorf("OCI layout manifest %d: %w", i, err)
		}
		id, err := s.moveImage(dir, md)
		if err != nil {
			return nil, fmt.Errorf("OCI layout manifest %d: %w", i, err)
		}
		var refs []string
		if ref, ok := ociRefName(d.Annotations); ok {
			norm, err := Normalize(ref)
			if err != nil {
				return nil, fmt.Errorf("OCI layout manifest %d: %w", i, err)
			}
			refs = append(refs, norm)
		}
		out = append(out, s.commitAll(idx, refs, imageDesc{Descriptor: v1.Descriptor{MediaType: md.MediaType, Size: md.Size, Digest: md.Digest}, id: id})...)
	}
	if len(out) == 0 {
		return nil, errors.New("OCI layout: index.json lists no images")
	}
	return out, s.writeIndex(idx)
}

// ociRefName returns the full reference an OCI layout's index entry names:
// containerd's io.containerd.image.name, or the standard ref.name when it is
// a full reference rather than a bare tag.
func ociRefName(ann map[string]string) (string, bool) {
	if n := ann["io.containerd.image.name"]; n != "" {
		return n, true
	}
	if n := ann[refAnnotation]; strings.ContainsAny(n, "/:@") {
		return n, true
	}
	return "", false
}

func layoutBlob(dir string, h v1.Hash) string {
	return filepath.Join(dir, "blobs", h.Algorithm, h.Hex)
}

// pickManifest returns the image manifest d names: d itself, or for an
// index the manifest for this machine's platform.
func pickManifest(dir string, d v1.Descriptor) (v1.Descriptor, error) {
	for depth := 0; depth < 4; depth++ {
		switch d.MediaType {
		case types.OCIManifestSchema1, types.DockerManifestSchema2:
			return d, nil
		case types.OCIImageIndex, types.DockerManifestList:
		default:
			return d, fmt.Errorf("unsupported media type %q", d.MediaType)
		}
		f, err := os.Open(layoutBlob(dir, d.Digest))
		if err != nil {
			return d, err
		}
		child, err := v1.ParseIndexManifest(f)
		f.Close()
		if err != nil {
			return d, fmt.Errorf("index %s: %w", d.Digest, err)
		}
		next, err := platformManifest(child.Manifests)
		if err != nil {
			return d, fmt.Errorf("index %s: %w", d.Digest, err)
		}
		d = next
	}
	return d, errors.New("indexes nested too deep")
}

// platformManifest picks linux/GOARCH from an index's entries (or the only
// entry when it names no platform).
func platformManifest(ds []v1.Descriptor) (v1.Descriptor, error) {
	for _, d := range ds {
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
			return d, nil
		}
	}
	if len(ds) == 1 && ds[0].Platform == nil {
		return ds[0], nil
	}
	return v1.Descriptor{}, fmt.Errorf("no image for linux/%s", runtime.GOARCH)
}

// moveImage moves the manifest md and the blobs it references from an
// unpacked layout into the store and returns the image id.
func (s *Store) moveImage(dir string, md v1.Descriptor) (string, error) {
	f, err := os.Open(layoutBlob(dir, md.Digest))
	if err != nil && s.hasBlob(md.Digest) {
		f, err = os.Open(s.blobPath(md.Digest))
	}
	if err != nil {
		return "", err
	}
	m, err := v1.ParseManifest(f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("manifest %s: %w", md.Digest, err)
	}
	hs := []v1.Hash{m.Config.Digest}
	for _, l := range m.Layers {
		hs = append(hs, l.Digest)
	}
	for _, h := range append(hs, md.Digest) {
		if s.hasBlob(h) {
			continue
		}
		if err := s.moveBlob(h, layoutBlob(dir, h)); err != nil {
			return "", err
		}
	}
	return m.Config.Digest.String(), nil
}

// extractFiles unpacks the regular files and directories of a tar archive
// into dir, refusing names that escape it.
func extractFiles(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(rel, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if parent := path.Dir(rel); parent != "." {
				if err := root.MkdirAll(parent, 0o700); err != nil {
					return err
				}
			}
			out, err := root.OpenFile(rel, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// cleanName returns a tar entry's name relative to the archive's root ("" for
// the root itself), refusing names that climb out of it.
func cleanName(n string) (string, error) {
	c := path.Clean(strings.TrimLeft(n, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("tar entry %q escapes the root", n)
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}
