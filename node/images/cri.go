package images

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageService is the CRI ImageService (k8s.io/cri-api runtime/v1) over a
// Store: what the kubelet asks of the node's images, and nothing else. The
// built-in runtime serves it on its socket next to its RuntimeService.
type ImageService struct {
	runtimeapi.UnimplementedImageServiceServer
	store *Store
	// insecure registries (host or host:port) are reached over plain HTTP.
	insecure []string
}

// NewImageService serves store; pulls from the registries in insecure use
// plain HTTP (or HTTPS without verification).
func NewImageService(store *Store, insecure []string) *ImageService {
	return &ImageService{store: store, insecure: insecure}
}

func criImage(img Image) *runtimeapi.Image {
	return &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        uint64(img.Size),
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
	}
}

// ListImages lists the store's images, or the one the filter names.
func (s *ImageService) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	if ref := req.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.store.Get(ref)
		if errors.Is(err, ErrNotFound) {
			return &runtimeapi.ListImagesResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		return &runtimeapi.ListImagesResponse{Images: []*runtimeapi.Image{criImage(img)}}, nil
	}
	imgs, err := s.store.List()
	if err != nil {
		return nil, err
	}
	out := make([]*runtimeapi.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, criImage(img))
	}
	return &runtimeapi.ListImagesResponse{Images: out}, nil
}

// ImageStatus reports one image; an absent image is a response without an
// image, not an error, as the CRI asks.
func (s *ImageService) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	img, err := s.store.Get(ref)
	if errors.Is(err, ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := criImage(img)
	// The user is in the config; the kubelet needs it for runAsNonRoot.
	if user, err := s.store.user(img.Manifest); err == nil {
		out.Username = user
	}
	return &runtimeapi.ImageStatusResponse{Image: out}, nil
}

// PullImage pulls the image with the credentials given and returns its id.
func (s *ImageService) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, status.Error(codes.InvalidArgument, "pull: no image reference")
	}
	var auth *Auth
	if a := req.GetAuth(); a != nil {
		auth = &Auth{Username: a.GetUsername(), Password: a.GetPassword(), Auth: a.GetAuth(),
			IdentityToken: a.GetIdentityToken(), RegistryToken: a.GetRegistryToken()}
	}
	id, err := s.store.Pull(ctx, ref, auth, s.insecure)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// RemoveImage removes the image; removing an absent image succeeds.
func (s *ImageService) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	ref := req.GetImage().GetImage()
	if _, err := s.store.Remove(ref); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("remove image %s: %w", ref, err)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the store's usage on its filesystem, which the
// kubelet's image garbage collection compares with the filesystem's size.
func (s *ImageService) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	u, err := s.store.DiskUsage()
	if err != nil {
		return nil, err
	}
	fs := &runtimeapi.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: s.store.Dir()},
		UsedBytes:  &runtimeapi.UInt64Value{Value: uint64(u.BlobBytes + u.LayerBytes)},
		InodesUsed: &runtimeapi.UInt64Value{Value: uint64(u.Inodes)},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{fs}}, nil
}

// user reads the configured user of the image of manifest h, without
// unpacking anything (Resolve would).
func (s *Store) user(h v1.Hash) (string, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return "", err
	}
	defer unlock()
	m, err := s.manifest(h)
	if err != nil {
		return "", err
	}
	cfg, err := s.config(m.Config.Digest)
	if err != nil {
		return "", err
	}
	return cfg.Config.User, nil
}
