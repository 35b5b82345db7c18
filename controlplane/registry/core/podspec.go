package core

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// DefaultPodSpec fills in upstream's defaults for a pod spec, in place. Workload
// resources (ReplicaSet, Deployment, Job ...) call it for their pod templates.
func DefaultPodSpec(spec *corev1.PodSpec) {
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if spec.DNSPolicy == "" {
		spec.DNSPolicy = corev1.DNSClusterFirst
	}
	if spec.TerminationGracePeriodSeconds == nil {
		v := int64(corev1.DefaultTerminationGracePeriodSeconds)
		spec.TerminationGracePeriodSeconds = &v
	}
	if spec.SchedulerName == "" {
		spec.SchedulerName = corev1.DefaultSchedulerName
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if spec.EnableServiceLinks == nil {
		v := corev1.DefaultEnableServiceLinks
		spec.EnableServiceLinks = &v
	}
	if spec.ServiceAccountName == "" {
		spec.ServiceAccountName = spec.DeprecatedServiceAccount
	}
	if spec.ServiceAccountName == "" {
		spec.ServiceAccountName = "default"
	}
	spec.DeprecatedServiceAccount = spec.ServiceAccountName
	if spec.HostNetwork {
		for i := range spec.Containers {
			podDefaultHostPorts(spec.Containers[i].Ports)
		}
		for i := range spec.InitContainers {
			podDefaultHostPorts(spec.InitContainers[i].Ports)
		}
	}
	for i := range spec.InitContainers {
		podDefaultContainer(&spec.InitContainers[i])
	}
	for i := range spec.Containers {
		podDefaultContainer(&spec.Containers[i])
	}
	for i := range spec.Volumes {
		podDefaultVolume(&spec.Volumes[i])
	}
	for i := range spec.Tolerations {
		t := &spec.Tolerations[i]
		if t.Operator == "" {
			t.Operator = corev1.TolerationOpEqual
		}
	}
}

// podDefaultHostPorts makes host-network pods' host ports equal their
// container ports, as they share the node's network.
func podDefaultHostPorts(ports []corev1.ContainerPort) {
	for i := range ports {
		if ports[i].HostPort == 0 {
			ports[i].HostPort = ports[i].ContainerPort
		}
	}
}

func podDefaultContainer(c *corev1.Container) {
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
		if podImageTagIsLatest(c.Image) {
			c.ImagePullPolicy = corev1.PullAlways
		}
	}
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	// Requests default to limits where only limits are given.
	for name, limit := range c.Resources.Limits {
		if _, ok := c.Resources.Requests[name]; !ok {
			if c.Resources.Requests == nil {
				c.Resources.Requests = corev1.ResourceList{}
			}
			c.Resources.Requests[name] = limit.DeepCopy()
		}
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		podDefaultProbe(p)
	}
	for _, h := range []*corev1.Lifecycle{c.Lifecycle} {
		if h == nil {
			continue
		}
		for _, handler := range []*corev1.LifecycleHandler{h.PostStart, h.PreStop} {
			if handler != nil && handler.HTTPGet != nil && handler.HTTPGet.Scheme == "" {
				handler.HTTPGet.Scheme = corev1.URISchemeHTTP
			}
		}
	}
	for i := range c.Env {
		if vf := c.Env[i].ValueFrom; vf != nil && vf.FieldRef != nil && vf.FieldRef.APIVersion == "" {
			vf.FieldRef.APIVersion = "v1"
		}
	}
}

func podDefaultProbe(p *corev1.Probe) {
	if p == nil {
		return
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = 1
	}
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = 10
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = 3
	}
	if p.HTTPGet != nil && p.HTTPGet.Scheme == "" {
		p.HTTPGet.Scheme = corev1.URISchemeHTTP
	}
	if p.GRPC != nil && p.GRPC.Service == nil {
		s := ""
		p.GRPC.Service = &s
	}
}

// podImageTagIsLatest reports an image with no tag or the tag latest (and no
// digest), which upstream always pulls.
func podImageTagIsLatest(image string) bool {
	if strings.Contains(image, "@") {
		return false
	}
	name := image[strings.LastIndex(image, "/")+1:]
	i := strings.LastIndex(name, ":")
	return i < 0 || name[i+1:] == "latest"
}

func podDefaultVolume(v *corev1.Volume) {
	mode := corev1.SecretVolumeSourceDefaultMode
	switch {
	case v.Secret != nil && v.Secret.DefaultMode == nil:
		v.Secret.DefaultMode = &mode
	case v.ConfigMap != nil && v.ConfigMap.DefaultMode == nil:
		v.ConfigMap.DefaultMode = &mode
	case v.DownwardAPI != nil && v.DownwardAPI.DefaultMode == nil:
		v.DownwardAPI.DefaultMode = &mode
	case v.Projected != nil && v.Projected.DefaultMode == nil:
		v.Projected.DefaultMode = &mode
	case v.HostPath != nil && v.HostPath.Type == nil:
		t := corev1.HostPathUnset
		v.HostPath.Type = &t
	}
	if v.DownwardAPI != nil {
		for i := range v.DownwardAPI.Items {
			if f := v.DownwardAPI.Items[i].FieldRef; f != nil && f.APIVersion == "" {
				f.APIVersion = "v1"
			}
		}
	}
	if v.VolumeSource == (corev1.VolumeSource{}) {
		v.EmptyDir = &corev1.EmptyDirVolumeSource{}
	}
}

var (
	podRestartPolicies = sets.New(string(corev1.RestartPolicyAlways), string(corev1.RestartPolicyOnFailure), string(corev1.RestartPolicyNever))
	podDNSPolicies     = sets.New(string(corev1.DNSClusterFirst), string(corev1.DNSClusterFirstWithHostNet), string(corev1.DNSDefault), string(corev1.DNSNone))
	podProtocols       = sets.New(string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP))
	podPullPolicies    = sets.New(string(corev1.PullAlways), string(corev1.PullNever), string(corev1.PullIfNotPresent))
	podTaintEffects    = sets.New(string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute))
)

// ValidatePodSpec checks a pod spec; fldPath is where the spec sits in the object
// (spec for a pod, spec.template.spec for a Deployment).
func ValidatePodSpec(spec *corev1.PodSpec, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	volumes := sets.New[string]()
	for i, v := range spec.Volumes {
		p := fldPath.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), v.Name, msg))
		}
		if volumes.Has(v.Name) {
			errs = append(errs, field.Duplicate(p.Child("name"), v.Name))
		}
		volumes.Insert(v.Name)
	}
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(fldPath.Child("containers"), ""))
	}
	names := sets.New[string]()
	errs = append(errs, podValidateContainers(spec.InitContainers, fldPath.Child("initContainers"), volumes, names)...)
	errs = append(errs, podValidateContainers(spec.Containers, fldPath.Child("containers"), volumes, names)...)
	if !podRestartPolicies.Has(string(spec.RestartPolicy)) {
		errs = append(errs, field.NotSupported(fldPath.Child("restartPolicy"), spec.RestartPolicy, sets.List(podRestartPolicies)))
	}
	if !podDNSPolicies.Has(string(spec.DNSPolicy)) {
		errs = append(errs, field.NotSupported(fldPath.Child("dnsPolicy"), spec.DNSPolicy, sets.List(podDNSPolicies)))
	}
	if spec.DNSPolicy == corev1.DNSNone && (spec.DNSConfig == nil || len(spec.DNSConfig.Nameservers) == 0) {
		errs = append(errs, field.Required(fldPath.Child("dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None"))
	}
	if g := spec.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		errs = append(errs, field.Invalid(fldPath.Child("terminationGracePeriodSeconds"), *g, "must be greater than or equal to 0"))
	}
	if a := spec.ActiveDeadlineSeconds; a != nil && *a <= 0 {
		errs = append(errs, field.Invalid(fldPath.Child("activeDeadlineSeconds"), *a, "must be greater than or equal to 1"))
	}
	errs = append(errs, metav1validation.ValidateLabels(spec.NodeSelector, fldPath.Child("nodeSelector"))...)
	if spec.ServiceAccountName != "" {
		for _, msg := range apivalidation.NameIsDNSSubdomain(spec.ServiceAccountName, false) {
			errs = append(errs, field.Invalid(fldPath.Child("serviceAccountName"), spec.ServiceAccountName, msg))
		}
	}
	if spec.NodeName != "" {
		for _, msg := range apivalidation.NameIsDNSSubdomain(spec.NodeName, false) {
			errs = append(errs, field.Invalid(fldPath.Child("nodeName"), spec.NodeName, msg))
		}
	}
	for i, t := range spec.Tolerations {
		p := fldPath.Child("tolerations").Index(i)
		if t.Effect != "" && !podTaintEffects.Has(string(t.Effect)) {
			errs = append(errs, field.NotSupported(p.Child("effect"), t.Effect, sets.List(podTaintEffects)))
		}
		switch t.Operator {
		case corev1.TolerationOpExists:
			if t.Value != "" {
				errs = append(errs, field.Invalid(p.Child("operator"), t.Value, "value must be empty when `operator` is 'Exists'"))
			}
		case corev1.TolerationOpEqual, "":
			if t.Key == "" {
				errs = append(errs, field.Invalid(p.Child("operator"), t.Operator, "operator must be Exists when `key` is empty, which means \"match all values and all keys\""))
			}
		default:
			errs = append(errs, field.NotSupported(p.Child("operator"), t.Operator, []string{"Equal", "Exists"}))
		}
		if t.TolerationSeconds != nil && t.Effect != corev1.TaintEffectNoExecute {
			errs = append(errs, field.Invalid(p.Child("effect"), t.Effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
		}
	}
	return errs
}

func podValidateContainers(containers []corev1.Container, fldPath *field.Path, volumes, names sets.Set[string]) field.ErrorList {
	var errs field.ErrorList
	for i := range containers {
		c := &containers[i]
		p := fldPath.Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(p.Child("name"), c.Name, msg))
			}
			if names.Has(c.Name) {
				errs = append(errs, field.Duplicate(p.Child("name"), c.Name))
			}
			names.Insert(c.Name)
		}
		if strings.TrimSpace(c.Image) == "" {
			errs = append(errs, field.Required(p.Child("image"), ""))
		} else if c.Image != strings.TrimSpace(c.Image) {
			errs = append(errs, field.Invalid(p.Child("image"), c.Image, "must not have leading or trailing whitespace"))
		}
		if c.ImagePullPolicy != "" && !podPullPolicies.Has(string(c.ImagePullPolicy)) {
			errs = append(errs, field.NotSupported(p.Child("imagePullPolicy"), c.ImagePullPolicy, sets.List(podPullPolicies)))
		}
		ports := sets.New[string]()
		for j, port := range c.Ports {
			pp := p.Child("ports").Index(j)
			if port.Name != "" {
				for _, msg := range validation.IsValidPortName(port.Name) {
					errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
				}
			}
			if port.ContainerPort < 1 || port.ContainerPort > 65535 {
				errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, validation.InclusiveRangeError(1, 65535)))
			}
			if port.HostPort < 0 || port.HostPort > 65535 {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), port.HostPort, validation.InclusiveRangeError(1, 65535)))
			}
			if port.Protocol != "" && !podProtocols.Has(string(port.Protocol)) {
				errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, sets.List(podProtocols)))
			}
			key := fmt.Sprintf("%d/%s", port.ContainerPort, port.Protocol)
			if ports.Has(key) {
				errs = append(errs, field.Duplicate(pp, key))
			}
			ports.Insert(key)
		}
		for j, e := range c.Env {
			ep := p.Child("env").Index(j)
			if e.Name == "" {
				errs = append(errs, field.Required(ep.Child("name"), ""))
			} else {
				for _, msg := range validation.IsEnvVarName(e.Name) {
					errs = append(errs, field.Invalid(ep.Child("name"), e.Name, msg))
				}
			}
			if e.Value != "" && e.ValueFrom != nil {
				errs = append(errs, field.Invalid(ep.Child("valueFrom"), "", "may not be specified when `value` is not empty"))
			}
		}
		for j, m := range c.VolumeMounts {
			mp := p.Child("volumeMounts").Index(j)
			if !volumes.Has(m.Name) {
				errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
			}
			if m.MountPath == "" {
				errs = append(errs, field.Required(mp.Child("mountPath"), ""))
			}
		}
		for name, q := range c.Resources.Requests {
			if q.Sign() < 0 {
				errs = append(errs, field.Invalid(p.Child("resources", "requests").Key(string(name)), q.String(), "must be greater than or equal to 0"))
			}
			if limit, ok := c.Resources.Limits[name]; ok && q.Cmp(limit) > 0 {
				errs = append(errs, field.Invalid(p.Child("resources", "requests").Key(string(name)), q.String(), fmt.Sprintf("must be less than or equal to %s limit of %s", name, limit.String())))
			}
		}
		for name, q := range c.Resources.Limits {
			if q.Sign() < 0 {
				errs = append(errs, field.Invalid(p.Child("resources", "limits").Key(string(name)), q.String(), "must be greater than or equal to 0"))
			}
		}
		for probeName, probe := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			errs = append(errs, podValidateProbe(probe, p.Child(probeName))...)
		}
	}
	return errs
}

func podValidateProbe(probe *corev1.Probe, p *field.Path) field.ErrorList {
	if probe == nil {
		return nil
	}
	var errs field.ErrorList
	handlers := 0
	if probe.Exec != nil {
		handlers++
	}
	if probe.HTTPGet != nil {
		handlers++
		errs = append(errs, podValidatePort(probe.HTTPGet.Port, p.Child("httpGet", "port"))...)
	}
	if probe.TCPSocket != nil {
		handlers++
		errs = append(errs, podValidatePort(probe.TCPSocket.Port, p.Child("tcpSocket", "port"))...)
	}
	if probe.GRPC != nil {
		handlers++
	}
	switch {
	case handlers == 0:
		errs = append(errs, field.Required(p, "must specify a handler type"))
	case handlers > 1:
		errs = append(errs, field.Forbidden(p, "may not specify more than 1 handler type"))
	}
	for name, v := range map[string]int32{"initialDelaySeconds": probe.InitialDelaySeconds, "timeoutSeconds": probe.TimeoutSeconds, "periodSeconds": probe.PeriodSeconds, "successThreshold": probe.SuccessThreshold, "failureThreshold": probe.FailureThreshold} {
		if v < 0 {
			errs = append(errs, field.Invalid(p.Child(name), v, "must be greater than or equal to 0"))
		}
	}
	return errs
}

func podValidatePort(port intstr.IntOrString, p *field.Path) field.ErrorList {
	if port.Type == intstr.Int {
		if port.IntVal < 1 || port.IntVal > 65535 {
			return field.ErrorList{field.Invalid(p, port.IntVal, validation.InclusiveRangeError(1, 65535))}
		}
		return nil
	}
	var errs field.ErrorList
	for _, msg := range validation.IsValidPortName(port.StrVal) {
		errs = append(errs, field.Invalid(p, port.StrVal, msg))
	}
	return errs
}

// ValidatePodTemplateSpec checks a pod template (labels, annotations and spec).
func ValidatePodTemplateSpec(t *corev1.PodTemplateSpec, fldPath *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabels(t.Labels, fldPath.Child("metadata", "labels"))
	errs = append(errs, apivalidation.ValidateAnnotations(t.Annotations, fldPath.Child("metadata", "annotations"))...)
	return append(errs, ValidatePodSpec(&t.Spec, fldPath.Child("spec"))...)
}
