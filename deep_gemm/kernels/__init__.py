"""Host side of each device kernel family: template instantiation, parameter structs, tensor maps, launch."""
