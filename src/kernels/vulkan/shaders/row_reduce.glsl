// Workgroup-wide sum and max of one float per thread (any subgroup size): subgroup reduction, then the
// subgroups' results through shared memory. Every thread gets the result. Needs WG (threads) defined.
shared float reduce_scratch[WG];  // one slot per subgroup (at most WG subgroups)

float workgroup_sum(float v) {
  const float s = subgroupAdd(v);
  if (subgroupElect()) reduce_scratch[gl_SubgroupID] = s;
  barrier();
  float total = 0.0;
  for (uint g = 0; g < gl_NumSubgroups; ++g) total += reduce_scratch[g];
  barrier();  // the scratch is reused by the next reduction
  return total;
}

float workgroup_max(float v) {
  const float m = subgroupMax(v);
  if (subgroupElect()) reduce_scratch[gl_SubgroupID] = m;
  barrier();
  float result = reduce_scratch[0];
  for (uint g = 1; g < gl_NumSubgroups; ++g) result = max(result, reduce_scratch[g]);
  barrier();
  return result;
}
