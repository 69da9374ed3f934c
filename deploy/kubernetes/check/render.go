package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Render builds the kustomization in dir from the filesystem alone (no plugins, no remote bases)
// and returns its objects as YAML documents, in kustomize's output order.
func Render(dir string) ([][]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %s: %w", dir, r.CurId(), err)
		}
		docs = append(docs, y)
	}
	return docs, nil
}

// Cluster is what a rendering would create, by kind. Decode fills it.
type Cluster struct {
	Namespaces   []*corev1.Namespace
	ConfigMaps   []*corev1.ConfigMap
	Services     []*corev1.Service
	Deployments  []*appsv1.Deployment
	StatefulSets []*appsv1.StatefulSet
	PDBs         []*policyv1.PodDisruptionBudget
}

// Decode decodes every document strictly into its k8s.io/api type: an unknown or duplicated
// field, a wrong type or a kind the manifests are not expected to hold is an error, naming the
// object.
func Decode(docs [][]byte) (*Cluster, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	c := &Cluster{}
	var errs []error
	for i, doc := range docs {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("object %d (%s): %w", i, describe(doc), err))
			continue
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			c.Namespaces = append(c.Namespaces, o)
		case *corev1.ConfigMap:
			c.ConfigMaps = append(c.ConfigMaps, o)
		case *corev1.Service:
			c.Services = append(c.Services, o)
		case *appsv1.Deployment:
			c.Deployments = append(c.Deployments, o)
		case *appsv1.StatefulSet:
			c.StatefulSets = append(c.StatefulSets, o)
		case *policyv1.PodDisruptionBudget:
			c.PDBs = append(c.PDBs, o)
		default:
			errs = append(errs, fmt.Errorf("object %d: kind %s is not one the check knows: teach Decode and Check about it", i, gvk))
		}
	}
	return c, errors.Join(errs...)
}

// describe names a document that did not decode, as well as it can.
func describe(doc []byte) string {
	var meta struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind == "" {
		return "unnamed"
	}
	return meta.Kind + " " + meta.Metadata.Name
}

// Overlays lists the overlays under root (deploy/kubernetes): every directory of
// root/overlays, as a path.
func Overlays(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "overlays"))
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(root, "overlays", e.Name()))
		}
	}
	slices.Sort(dirs)
	if len(dirs) == 0 {
		return nil, fmt.Errorf("no overlay under %s/overlays", root)
	}
	return dirs, nil
}
