package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file is the image garbage collection, as upstream's image manager:
// when the image filesystem is more than HighThreshold percent full, unused
// images (no container of any state refers to them) are removed, least
// recently used first and none younger than ImageMinAge, until it is below
// LowThreshold. It works through CRI only (ImageFsInfo, ListImages,
// ListContainers, RemoveImage).

// imageGCLoop runs imageGC every ImageGCInterval.
func (k *Kubelet) imageGCLoop(ctx context.Context) {
	t := time.NewTicker(k.cfg.ImageGCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if freed, err := k.imageGC(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("kubelet image garbage collection failed", "err", err)
		} else if freed > 0 {
			slog.Info("kubelet removed unused images", "bytes", freed)
		}
	}
}

// imageGC frees image space as the thresholds say and returns the bytes
// freed.
func (k *Kubelet) imageGC(ctx context.Context) (uint64, error) {
	info, err := k.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return 0, err
	}
	var need uint64
	for _, fs := range info.GetImageFilesystems() {
		var st unix.Statfs_t
		if err := unix.Statfs(fs.GetFsId().GetMountpoint(), &st); err != nil {
			// A remote runtime's filesystem may not be visible here.
			continue
		}
		capacity := st.Blocks * uint64(st.Bsize)
		used := capacity - st.Bavail*uint64(st.Bsize)
		if capacity == 0 || used*100 < uint64(k.cfg.ImageGCHighThresholdPercent)*capacity {
			continue
		}
		if low := uint64(k.cfg.ImageGCLowThresholdPercent) * capacity / 100; used > low {
			need = max(need, used-low)
		}
	}
	k.noteImageUse(ctx)
	if need == 0 {
		return 0, nil
	}
	imgs, err := k.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return 0, err
	}
	inUse, err := k.imagesInUse(ctx)
	if err != nil {
		return 0, err
	}
	k.mu.Lock()
	var candidates []*runtimeapi.Image
	for _, img := range imgs.GetImages() {
		if inUse[img.GetId()] || img.GetPinned() {
			continue
		}
		first, ok := k.imageFirstSeen[img.GetId()]
		if !ok || time.Since(first) < k.cfg.ImageMinAge {
			continue
		}
		candidates = append(candidates, img)
	}
	lastUsed := func(img *runtimeapi.Image) time.Time {
		if t, ok := k.imageLastUsed[img.GetId()]; ok {
			return t
		}
		return k.imageFirstSeen[img.GetId()]
	}
	sort.Slice(candidates, func(i, j int) bool { return lastUsed(candidates[i]).Before(lastUsed(candidates[j])) })
	k.mu.Unlock()
	var freed uint64
	for _, img := range candidates {
		if freed >= need {
			break
		}
		if _, err := k.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: img.GetId()}}); err != nil {
			return freed, fmt.Errorf("remove image %s: %w", img.GetId(), err)
		}
		freed += img.GetSize()
		k.mu.Lock()
		delete(k.imageFirstSeen, img.GetId())
		delete(k.imageLastUsed, img.GetId())
		k.mu.Unlock()
	}
	if freed < need {
		return freed, fmt.Errorf("freed %d of the %d bytes wanted: the rest is in use", freed, need)
	}
	return freed, nil
}

// imagesInUse is the ids of the images some container (any state) uses.
func (k *Kubelet) imagesInUse(ctx context.Context) (map[string]bool, error) {
	cs, err := k.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, c := range cs.GetContainers() {
		out[c.GetImageRef()] = true
		out[c.GetImage().GetImage()] = true
	}
	return out, nil
}

// noteImageUse records when each image was first seen and last used.
func (k *Kubelet) noteImageUse(ctx context.Context) {
	imgs, err := k.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return
	}
	inUse, err := k.imagesInUse(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, img := range imgs.GetImages() {
		if _, ok := k.imageFirstSeen[img.GetId()]; !ok {
			k.imageFirstSeen[img.GetId()] = now
		}
		if inUse[img.GetId()] {
			k.imageLastUsed[img.GetId()] = now
		}
	}
}
