package core

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestPodDefaults(t *testing.T) {
	spec := corev1.PodSpec{Containers: []corev1.Container{
		{Name: "a", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
			Resources:     corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/"}}}},
		{Name: "b", Image: "registry:5000/app:1.2"},
	}}
	DefaultPodSpec(&spec)
	a, b := spec.Containers[0], spec.Containers[1]
	checks := map[string]bool{
		"restartPolicy Always":        spec.RestartPolicy == corev1.RestartPolicyAlways,
		"dnsPolicy ClusterFirst":      spec.DNSPolicy == corev1.DNSClusterFirst,
		"grace 30":                    *spec.TerminationGracePeriodSeconds == 30,
		"scheduler":                   spec.SchedulerName == "default-scheduler",
		"service account":             spec.ServiceAccountName == "default",
		"untagged image pulls Always": a.ImagePullPolicy == corev1.PullAlways,
		"tagged image IfNotPresent":   b.ImagePullPolicy == corev1.PullIfNotPresent,
		"port protocol TCP":           a.Ports[0].Protocol == corev1.ProtocolTCP,
		"requests default to limits":  a.Resources.Requests.Memory().String() == "64Mi",
		"probe period 10":             a.LivenessProbe.PeriodSeconds == 10 && a.LivenessProbe.TimeoutSeconds == 1,
		"probe scheme HTTP":           a.LivenessProbe.HTTPGet.Scheme == corev1.URISchemeHTTP,
		"termination message path":    b.TerminationMessagePath == "/dev/termination-log",
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("default: %s", what)
		}
	}
}

func TestPodValidationPaths(t *testing.T) {
	spec := corev1.PodSpec{RestartPolicy: "Sometimes", DNSPolicy: corev1.DNSClusterFirst, Containers: []corev1.Container{
		{Name: "c"},
		{Name: "c", Image: "x", VolumeMounts: []corev1.VolumeMount{{Name: "missing", MountPath: "/m"}}},
	}}
	got := map[string]bool{}
	for _, e := range ValidatePodSpec(&spec, field.NewPath("spec")) {
		got[e.Field+" "+e.Type.String()] = true
	}
	for _, want := range []string{
		"spec.containers[0].image Required value", "spec.containers[1].name Duplicate value",
		"spec.containers[1].volumeMounts[0].name Not found", "spec.restartPolicy Unsupported value",
	} {
		if !got[want] {
			t.Errorf("missing error %q in %v", want, got)
		}
	}
}

func TestPodQOSClass(t *testing.T) {
	rl := func(cpu, mem string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
	}
	cases := []struct {
		req, lim corev1.ResourceList
		want     corev1.PodQOSClass
	}{
		{nil, nil, corev1.PodQOSBestEffort},
		{rl("1", "1Gi"), rl("1", "1Gi"), corev1.PodQOSGuaranteed},
		{rl("100m", "1Gi"), rl("1", "1Gi"), corev1.PodQOSBurstable},
		{rl("100m", "1Gi"), nil, corev1.PodQOSBurstable},
	}
	for _, c := range cases {
		spec := corev1.PodSpec{Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: c.req, Limits: c.lim}}}}
		if got := PodQOSClass(&spec); got != c.want {
			t.Errorf("QoS of requests %v limits %v = %s, want %s", c.req, c.lim, got, c.want)
		}
	}
}

func TestPodRowStatus(t *testing.T) {
	now := metav1.Now()
	pod := func(status corev1.PodStatus, deleting bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", CreationTimestamp: now},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}, Status: status}
		if deleting {
			p.DeletionTimestamp = &now
		}
		return p
	}
	crash := corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "c", RestartCount: 4,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, FinishedAt: now}}}}}
	running := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.42.0.5", ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}
	cases := []struct {
		pod                     *corev1.Pod
		ready, status, restarts string
	}{
		{pod(corev1.PodStatus{Phase: corev1.PodPending}, false), "0/1", "Pending", "0"},
		{pod(crash, false), "0/1", "CrashLoopBackOff", "4 (0s ago)"},
		{pod(running, false), "1/1", "Running", "0"},
		{pod(running, true), "1/1", "Terminating", "0"},
	}
	for _, c := range cases {
		row := podRow(c.pod)
		if row[1] != c.ready || row[2] != c.status || row[3] != c.restarts {
			t.Errorf("row %v, want READY %s STATUS %s RESTARTS %s", row[:4], c.ready, c.status, c.restarts)
		}
	}
}

func TestServicePortsColumn(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{
		{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}}}}
	if got := svcPorts(svc); got != "80:30080/TCP,53/UDP" {
		t.Errorf("PORT(S) = %q", got)
	}
	if got := svcExternalIP(&corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}); got != "<pending>" {
		t.Errorf("EXTERNAL-IP of a new load balancer = %q", got)
	}
}
